//! The close of a connection: [`start`], which every initiator calls, and the closer thread
//! that carries the sequence out (see the `peer` module docs for the whole story).
//!
//! The closer is a short-lived thread spawned when the close starts, whoever starts it: the
//! application (`shutdown`, `close`, `abort`, the last handle dropped) or a connection thread
//! (the reader on EOF or a read error, the writer on a write error, any of them on a panic).
//! None of those can run the sequence itself: it joins the mux, the writer and the reader.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::TrySendError;

use super::batch::{Settled, ToWriter};
use super::metrics::Counters;
use super::outbox::Command;
use super::shared::{Shared, Threads};
use super::{DisconnectReason, Disconnected, DrainReport};
use crate::error::RpcError;

/// Starts the close (or makes a started one an abort). Returns at once.
pub(crate) fn start(shared: &Arc<Shared>, reason: DisconnectReason, abort: bool) {
    let threads = shared.record_close(reason, abort);
    // Sends are refused from here on; the mux learns of the close from the same step.
    shared.outbox.close_input();
    if abort {
        shared.abort_signal.fire();
        shared.stop_reader();
    }
    // The writer may be waiting on a full socket with an older deadline.
    // (No waker yet: the writer has never waited, and reads the deadline before it does.)
    if let Some(waker) = shared.writer_waker.get() {
        let _ = waker.wake();
    }
    if let Some(threads) = threads {
        spawn_closer(shared.clone(), threads);
    }
}

/// Runs the sequence on a thread of its own.
pub(crate) fn spawn_closer(shared: Arc<Shared>, threads: Threads) {
    let spawned = std::thread::Builder::new()
        .name("syncpeer-closer".into())
        .stack_size(super::THREAD_STACK)
        .spawn({
            let shared = shared.clone();
            move || run(&shared, threads)
        });
    if let Err(e) = spawned {
        // Without a closer the connection cannot end: this process has run out of threads.
        log::error!("peer {}: cannot spawn the closer: {e}", shared.remote);
    }
}

/// The close sequence from the join of the mux on (the steps before it are the outbox
/// gate and the mux's drain, which `start` set off).
fn run(shared: &Shared, threads: Threads) {
    let _guard = PublishOnPanic(shared);
    let Threads {
        mux,
        writer,
        reader,
        reader_done,
        frames,
        outbox,
        on_disconnect,
    } = threads;
    // 3. Join the mux: when it returns, every accepted command has been turned into frames in
    // the frames channel (or settled as abandoned).
    join(shared, mux, "mux");
    // What a mux that panicked left in the outbox is settled here (after a normal exit it is
    // closed and empty).
    shared.outbox.close();
    settle_refused(shared, outbox.try_iter());
    drop(outbox);
    // 4. The marker, behind every frame. It waits only while the writer works through what is
    // ahead, which is bounded by the drain deadline and `write_timeout`; an error means the
    // writer has gone.
    let _ = frames.send(ToWriter::DrainAndClose);
    drop(frames);
    // 5. The writer writes what is ahead of the marker and half-closes.
    join(shared, writer, "writer");
    // 6. The reader reads until the remote's EOF (it then ends) or the deadline.
    let deadline = shared.deadline().unwrap_or_else(Instant::now);
    let _ = reader_done.recv_deadline(deadline);
    shared.stop_reader();
    join(shared, reader, "reader");
    // Requests the mux never took were received and not delivered.
    shared.count_requests_left_to_mux();
    // 7. The one notice, and the report. The notice goes first when its channel has room,
    // so that it is queued by the time `join` returns; a receiver that is slow to make room
    // gets it as soon as it does (the connection's threads and socket are gone already, and
    // this thread holds nothing else), while `join` returns at once.
    let report = build_report(shared);
    let notice = on_disconnect.map(|tx| {
        let notice = Disconnected {
            peer_id: shared.remote,
            reason: report.reason,
            report: report.clone(),
        };
        (tx, notice)
    });
    let late = match notice {
        Some((tx, notice)) => match tx.try_send(notice) {
            Err(TrySendError::Full(notice)) => Some((tx, notice)),
            Ok(()) | Err(TrySendError::Disconnected(_)) => None,
        },
        None => None,
    };
    publish(shared, report);
    if let Some((tx, notice)) = late
        && tx.send(notice).is_err()
    {
        log::debug!("peer {}: the notice's receiver left", shared.remote);
    }
}

/// Joins a connection thread; a panic on it is recorded for the report and logged.
fn join(shared: &Shared, thread: JoinHandle<()>, name: &str) {
    if thread.join().is_err() {
        shared.panicked.store(true, Ordering::SeqCst);
        log::error!("peer {}: {name} thread panicked", shared.remote);
    }
}

/// Settles commands that will never be handled: sends and responses were accepted, so they are
/// abandoned; RPC callers learn that the connection closed.
pub(crate) fn settle_refused(shared: &Shared, commands: impl Iterator<Item = Command>) {
    let counters = &shared.counters;
    let mut abandoned = Settled::default();
    for c in commands {
        match c {
            Command::Send { data, receipt, .. } => {
                abandoned.messages += 1;
                abandoned.bytes += data.len() as u64;
                // Resolves as abandoned when dropped.
                drop(receipt);
            }
            Command::Respond { data, .. } => {
                abandoned.messages += 1;
                abandoned.bytes += data.len() as u64;
                Counters::add(&counters.inbound_rpcs_unanswered, 1);
            }
            Command::Unanswered { .. } => Counters::add(&counters.inbound_rpcs_unanswered, 1),
            Command::Rpc(rpc) => {
                Counters::add(&counters.rpcs_failed_at_close, 1);
                rpc.reply.finish(Err(rpc_error(shared)));
            }
        }
    }
    shared.count_abandoned(abandoned);
}

/// How an RPC fails at the close.
pub(crate) fn rpc_error(shared: &Shared) -> RpcError {
    if shared.is_aborted() {
        RpcError::Cancelled
    } else {
        RpcError::Disconnected
    }
}

/// Publishes a report if the closer itself panics, so that no `join` waits forever.
struct PublishOnPanic<'a>(&'a Shared);

impl Drop for PublishOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.close.lock().report.is_none() {
            self.0.panicked.store(true, Ordering::SeqCst);
            publish(self.0, build_report(self.0));
        }
    }
}

/// Builds the report once every thread has ended.
fn build_report(shared: &Shared) -> DrainReport {
    let c = &shared.counters;
    if shared.panicked.load(Ordering::SeqCst) {
        // A thread that panicked dropped what it held without settling it. Every message the
        // writer did not write (the count of written ones is exact) is abandoned.
        let s = c.snapshot();
        let missing = s
            .messages_accepted
            .saturating_sub(s.messages_written + s.messages_abandoned);
        let missing_bytes = s
            .bytes_accepted
            .saturating_sub(s.bytes_written + s.bytes_abandoned);
        if missing > 0 {
            log::error!(
                "peer {}: {missing} messages held by a thread that panicked are abandoned",
                shared.remote
            );
        }
        Counters::add(&c.messages_abandoned, missing);
        Counters::add(&c.bytes_abandoned, missing_bytes);
    }
    let s = c.snapshot();
    if s.messages_accepted != s.messages_written + s.messages_abandoned {
        log::error!(
            "peer {}: accounting broken: {} accepted, {} written, {} abandoned",
            shared.remote,
            s.messages_accepted,
            s.messages_written,
            s.messages_abandoned
        );
    }
    let st = shared.close.lock();
    DrainReport {
        reason: st.reason.unwrap_or(DisconnectReason::InputOutputError),
        aborted: st.aborted,
        messages_accepted: s.messages_accepted,
        bytes_accepted: s.bytes_accepted,
        messages_written: s.messages_written,
        bytes_written: s.bytes_written,
        messages_abandoned: s.messages_abandoned,
        bytes_abandoned: s.bytes_abandoned,
        rpcs_failed_at_close: s.rpcs_failed_at_close,
        delivered_during_drain: s.delivered_during_drain,
        direct_sends_delivered: s.direct_sends_delivered,
        requests_delivered: s.requests_delivered,
        receive_drops: s.receive_drops(),
        drain_duration: st.started.map(|t| t.elapsed()).unwrap_or_default(),
    }
}

/// Publishes the report to the handles waiting in `join`.
fn publish(shared: &Shared, report: DrainReport) {
    shared.close.lock().report = Some(report.clone());
    shared.finished.notify_all();
    log::debug!(
        "peer {}: closed ({}): {} written, {} abandoned in {:?}",
        shared.remote,
        report.reason,
        report.messages_written,
        report.messages_abandoned,
        report.drain_duration
    );
}
