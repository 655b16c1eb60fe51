//! The workload's [`System`] on the async original's architecture: the tokio
//! re-implementation of the Aptos `Peer` actor in `tests/support/async_peer.rs` (three tasks
//! per connection, and the original's shutdown: drop the request channel, signal the writer at
//! once). It reports nothing at a close: whatever its writer left queued is gone.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use syncpeer::{Bytes, DisconnectReason};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::VOTES;
use crate::async_peer::{self, AsyncConfig, AsyncPeerHandle, AsyncReport, PeerRequest};
use crate::workload::System;

/// Bound for each wait at the end (a close, the count of a connection's deliveries).
const BOUND: Duration = Duration::from_secs(10);

/// The original, on a multi-threaded runtime with one worker per core (tokio's default).
#[derive(Debug)]
pub(crate) struct Original {
    rt: Runtime,
}

impl Original {
    pub(crate) fn new() -> Original {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build();
        Original {
            rt: rt.expect("a tokio runtime"),
        }
    }
}

/// One end: the peer, a clone of its request channel, and the task counting its deliveries.
#[derive(Debug)]
pub(crate) struct End {
    peer: Option<AsyncPeerHandle>,
    requests: Option<mpsc::Sender<PeerRequest>>,
    closing: Option<JoinHandle<AsyncReport>>,
    counter: JoinHandle<()>,
}

impl System for Original {
    type End = End;

    fn open(
        &mut self,
        socket: TcpStream,
        _me: usize,
        _remote: usize,
        delivered: Arc<AtomicU64>,
    ) -> End {
        let (tx, mut votes) = mpsc::unbounded_channel();
        let handlers = async_peer::handlers(vec![(VOTES, tx)]);
        let (handle, config) = (self.rt.handle(), AsyncConfig::default());
        let peer = AsyncPeerHandle::spawn(handle, socket, config, handlers).expect("spawn a peer");
        // Ends when the peer's main task ends and drops the handler.
        let counter = self.rt.spawn(async move {
            while votes.recv().await.is_some() {
                delivered.fetch_add(1, Relaxed);
            }
        });
        End {
            requests: Some(peer.requests()),
            peer: Some(peer),
            closing: None,
            counter,
        }
    }

    fn send(&mut self, end: &mut End, vote: Bytes) -> bool {
        // Never waits, as syncpeer's try_send: a full request queue refuses the vote.
        let request = PeerRequest::SendDirectSend {
            protocol: VOTES,
            data: vote,
        };
        end.requests
            .as_ref()
            .is_some_and(|r| r.try_send(request).is_ok())
    }

    fn close(&mut self, end: &mut End, _reason: DisconnectReason) {
        // As the peer manager closes the original: it drops its sender.
        end.requests = None;
        if let Some(peer) = end.peer.take() {
            end.closing = Some(self.rt.spawn(peer.shutdown()));
        }
    }

    fn finish(mut self, mut ends: Vec<End>) -> Vec<(Option<u64>, Option<u64>)> {
        for end in &mut ends {
            self.close(end, DisconnectReason::RequestedByPeerManager);
        }
        self.rt.block_on(async {
            for end in ends.iter_mut() {
                let closing = end.closing.as_mut().expect("closed just above");
                let _ = tokio::time::timeout(BOUND, closing).await;
                let _ = tokio::time::timeout(BOUND, &mut end.counter).await;
            }
        });
        // The original reports nothing about what a close did not deliver.
        ends.iter().map(|_| (None, None)).collect()
    }
}
