//! The workload's [`System`] on syncpeer: one `Peer` per connection end, votes counted by an
//! inline handler on the receiving reader thread, and every vote sent with a receipt, so that
//! the close's outcome of each one is known.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use syncpeer::{Bytes, Delivery, DisconnectReason, Handler, Peer, PeerConfig, PeerHandle};
use syncpeer::{PeerId, Receipt};

use crate::VOTES;
use crate::plan::LINGER;
use crate::workload::System;

/// syncpeer, with `linger` shortened to [`LINGER`].
#[derive(Debug)]
pub(crate) struct Syncpeer {
    config: PeerConfig,
}

impl Syncpeer {
    pub(crate) fn new() -> Syncpeer {
        let config = PeerConfig {
            linger: LINGER,
            ..PeerConfig::default()
        };
        Syncpeer { config }
    }
}

/// One end: its handle and a receipt per vote it accepted.
#[derive(Debug)]
pub(crate) struct End {
    handle: PeerHandle,
    receipts: Vec<Receipt>,
}

impl System for Syncpeer {
    type End = End;

    fn open(
        &mut self,
        socket: TcpStream,
        _me: usize,
        remote: usize,
        delivered: Arc<AtomicU64>,
    ) -> End {
        let count = Handler::inline(move |_| {
            delivered.fetch_add(1, Relaxed);
        });
        let handle = Peer::builder(socket)
            .config(self.config.clone())
            .remote_peer_id(PeerId::from_u64(remote as u64))
            .handler(VOTES, count)
            .spawn()
            .expect("spawn a peer");
        End {
            handle,
            receipts: Vec::new(),
        }
    }

    fn send(&mut self, end: &mut End, vote: Bytes) -> bool {
        // Never waits: a broadcast must not stall on one slow peer.
        match end.handle.try_send_with_receipt(VOTES, vote) {
            Ok(receipt) => end.receipts.push(receipt),
            Err(_) => return false,
        }
        true
    }

    fn close(&mut self, end: &mut End, reason: DisconnectReason) {
        end.handle.close(reason);
    }

    fn finish(self, ends: Vec<End>) -> Vec<(Option<u64>, Option<u64>)> {
        let finish = |end: End| {
            // Bounded: every close ends within `linger` of its start (and each end was closed,
            // or saw its remote close).
            let report = end.handle.join().expect("joined from the main thread");
            let abandoned =
                |r: &&Receipt| r.wait_timeout(Duration::from_secs(5)) == Some(Delivery::Abandoned);
            let by_receipts = end.receipts.iter().filter(abandoned).count() as u64;
            (Some(by_receipts), Some(report.messages_abandoned))
        };
        ends.into_iter().map(finish).collect()
    }
}
