//! The end of a connection, run on the mux thread once its event loop has returned: settle
//! what the mux holds, queue `DrainAndClose` behind the last frame, join the writer, let the
//! reader read until the remote's EOF or the deadline, join it, then publish the
//! [`DrainReport`] and send the one [`Disconnected`].
//!
//! A guard publishes the report even if the mux thread panics, so `shutdown`, `join` and the
//! `Disconnected` listener never wait forever.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::mux::Mux;
use super::shared::Shared;
use super::{DisconnectReason, Disconnected, DrainReport};

impl Mux {
    /// The mux thread's body: the event loop, then the close sequence.
    pub(crate) fn run_and_close(
        mut self,
        writer: JoinHandle<()>,
        reader: JoinHandle<()>,
        reader_done: Receiver<()>,
        on_disconnect: Option<Sender<Disconnected>>,
    ) {
        let mut guard = Publish {
            shared: self.shared.clone(),
            on_disconnect,
            done: false,
        };
        self.event_loop();
        log::debug!("peer {}: mux drained, closing", self.shared.remote);
        self.finish_drain();
        // The reader goes on reading until the end. RPC traffic it hands over from now on
        // can no longer be handled, but it was received: it is taken and counted (as the
        // reader counts what it cannot hand over at all), never left in a dropped channel.
        let inbound = std::mem::replace(&mut self.inbound, crossbeam_channel::never());
        let shared = self.shared.clone();
        drop(self);
        let _ = writer.join();
        // Keep reading until the remote's EOF (the reader exits and drops its end) or the
        // deadline; then tell the reader to stop.
        let deadline = shared.deadline().unwrap_or_else(Instant::now);
        loop {
            crossbeam_channel::select! {
                recv(reader_done) -> _ => break,
                recv(inbound) -> m => match m {
                    Ok(m) => m.count_unhandled(&shared.counters),
                    Err(_) => break,
                },
                default(deadline.saturating_duration_since(Instant::now())) => break,
            }
        }
        shared.reader_stop.store(true, Ordering::SeqCst);
        let _ = shared.reader_waker.wake();
        // Until the reader has stopped (and dropped its sender), keep taking what it hands
        // over, so it never waits on a full channel.
        for m in inbound.iter() {
            m.count_unhandled(&shared.counters);
        }
        let _ = reader.join();
        guard.publish();
    }
}

/// Publishes the report and the notice exactly once; on drop (a panic) it aborts first.
struct Publish {
    shared: Arc<Shared>,
    on_disconnect: Option<Sender<Disconnected>>,
    done: bool,
}

impl Publish {
    fn publish(&mut self) {
        self.done = true;
        let shared = &self.shared;
        let c = shared.counters.snapshot();
        let report = {
            let mut st = shared.close.lock();
            let report = DrainReport {
                reason: st.reason.unwrap_or(DisconnectReason::InputOutputError),
                aborted: st.aborted,
                messages_accepted: c.messages_accepted,
                bytes_accepted: c.bytes_accepted,
                messages_written: c.messages_written,
                bytes_written: c.bytes_written,
                messages_abandoned: c.messages_abandoned,
                bytes_abandoned: c.bytes_abandoned,
                rpcs_failed_at_close: c.rpcs_failed_at_close,
                delivered_during_drain: c.delivered_during_drain,
                drain_duration: st.started.map(|s| s.elapsed()).unwrap_or_default(),
            };
            st.report = Some(report.clone());
            report
        };
        shared.finished.notify_all();
        log::debug!(
            "peer {}: closed ({}): {} written, {} abandoned in {:?}",
            shared.remote,
            report.reason,
            report.messages_written,
            report.messages_abandoned,
            report.drain_duration
        );
        if let Some(tx) = self.on_disconnect.take() {
            let notice = Disconnected {
                peer_id: shared.remote,
                reason: report.reason,
                report,
            };
            // Bounded so a listener that stopped reading cannot hold this thread forever.
            if tx.send_timeout(notice, shared.config.linger).is_err() {
                log::warn!("peer {}: disconnect notice not delivered", shared.remote);
            }
        }
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        if !self.done {
            log::error!("peer {}: mux thread panicked", self.shared.remote);
            self.shared
                .begin_close(DisconnectReason::InputOutputError, true);
            // The writer may be parked on the lane: let it abandon what is there and exit.
            self.shared.lane.close_writer();
            self.publish();
        }
    }
}
