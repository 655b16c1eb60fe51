//! The writer thread (`syncpeer-writer`): owns the write half and receives, through one FIFO
//! channel, batches of encoded frames and finally `DrainAndClose`.
//!
//! It gathers the batches already queued into one vectored write (batching is where
//! throughput comes from). When it holds no batch, the mux may write a small batch itself
//! (one thread hop less on the latency path) and hands over only what the socket did not take. The socket is non-blocking; on `WouldBlock` the writer waits on its
//! own `mio::Poll` for writability, bounded by `write_timeout` without progress and, once a close
//! has started, by the drain deadline. Past either, or after a write error or an abort, every
//! message not yet written is counted as abandoned (and its receipt resolved), so each
//! accepted message gets exactly one outcome.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::DisconnectReason;
use super::shared::{Batch, Shared, WriterCmd, write_batches};
use super::socket::Half;

pub(crate) const WAKER: Token = Token(1);
const SOCKET: Token = Token(0);

/// Most batches gathered before writing.
const MAX_GATHER: usize = 64;
/// Bytes past which no more batches are gathered: whatever the writer holds is ahead of a
/// message sent now, so a stream's 4 MiB fragments are taken one at a time.
const GATHER_BYTES: usize = 512 * 1024;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    half: Arc<Half>,
    poll: Poll,
    frames: Receiver<WriterCmd>,
    queue: VecDeque<Batch>,
    /// Once set, nothing more is written; everything is abandoned.
    broken: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        half: Arc<Half>,
        poll: Poll,
        frames: Receiver<WriterCmd>,
    ) -> Writer {
        Writer {
            shared,
            half,
            poll,
            frames,
            queue: VecDeque::new(),
            broken: false,
        }
    }

    pub(crate) fn run(mut self) {
        let fd = self.half.raw_fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), SOCKET, Interest::WRITABLE)
        {
            log::error!("peer {}: cannot poll the socket: {e}", self.shared.remote);
            self.fail(DisconnectReason::InputOutputError);
        }
        let mut closing = false;
        while !closing {
            let Ok(cmd) = self.frames.recv() else {
                // The mux ended without the marker (it panicked): nothing more will come.
                break;
            };
            closing = self.take(cmd);
            while !closing
                && self.queue.len() < MAX_GATHER
                && self.queue.iter().map(|b| b.len).sum::<usize>() < GATHER_BYTES
            {
                match self.frames.try_recv() {
                    Ok(cmd) => closing = self.take(cmd),
                    Err(_) => break,
                }
            }
            self.write_queued();
        }
        self.abandon_queued();
        let how = if self.shared.is_aborted() {
            Shutdown::Both
        } else {
            Shutdown::Write
        };
        // Half-close: the remote reads EOF after our last byte. Errors mean it is gone already.
        let _ = self.half.shutdown(how);
        log::debug!("peer {}: writer exits", self.shared.remote);
    }

    /// Queues a batch; true for the close marker.
    fn take(&mut self, cmd: WriterCmd) -> bool {
        match cmd {
            WriterCmd::Batch(b) => {
                self.shared
                    .counters
                    .writer_queue_depth
                    .fetch_sub(1, Ordering::Relaxed);
                if self.broken || self.shared.is_aborted() {
                    self.finish(b);
                } else {
                    self.queue.push_back(b);
                }
                false
            }
            WriterCmd::DrainAndClose => true,
        }
    }

    /// A batch leaves the writer: abandons what is unwritten, and lets the mux write again
    /// once none is left (the release pairs with the mux's acquire load).
    fn finish(&self, batch: Batch) {
        batch.abandon(&self.shared.counters);
        self.shared.writer_busy.fetch_sub(1, Ordering::Release);
    }

    fn fail(&mut self, reason: DisconnectReason) {
        self.broken = true;
        self.shared.begin_close(reason, false);
    }

    /// Writes until the queue is empty, or gives up on it.
    fn write_queued(&mut self) {
        let mut events = Events::with_capacity(4);
        let mut last_progress = Instant::now();
        while !self.queue.is_empty() {
            if self.broken || self.shared.is_aborted() {
                return self.abandon_local();
            }
            let result = write_batches(
                &self.half,
                self.queue.make_contiguous(),
                &self.shared.counters,
            );
            match result {
                Ok(0) => {
                    log::error!("peer {}: socket accepts no more bytes", self.shared.remote);
                    self.fail(DisconnectReason::InputOutputError);
                }
                Ok(_) => {
                    last_progress = Instant::now();
                    while self.queue.front().is_some_and(Batch::is_written) {
                        let done = self.queue.pop_front().expect("front exists");
                        self.finish(done);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let write_deadline = last_progress + self.shared.config.write_timeout;
                    let drain_deadline = self.shared.deadline();
                    let deadline = drain_deadline.map_or(write_deadline, |d| d.min(write_deadline));
                    let now = Instant::now();
                    if now >= deadline {
                        if now >= write_deadline {
                            log::error!(
                                "peer {}: no write progress for {:?}",
                                self.shared.remote,
                                self.shared.config.write_timeout
                            );
                            self.fail(DisconnectReason::InputOutputError);
                        } else {
                            // The drain deadline passed: the rest is abandoned, the reason stands.
                            self.broken = true;
                        }
                        continue;
                    }
                    match self.poll.poll(&mut events, Some(deadline - now)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::error!("peer {}: poll failed: {e}", self.shared.remote);
                            self.fail(DisconnectReason::InputOutputError);
                        }
                    }
                }
                Err(e) => {
                    log::error!("peer {}: write failed: {e}", self.shared.remote);
                    self.fail(DisconnectReason::InputOutputError);
                }
            }
        }
    }

    /// Abandons the batches taken from the channel (not those still in it).
    fn abandon_local(&mut self) {
        while let Some(batch) = self.queue.pop_front() {
            self.finish(batch);
        }
    }

    /// At exit: abandons everything, including batches left in the channel if the mux ended
    /// without sending the marker.
    fn abandon_queued(&mut self) {
        self.abandon_local();
        while let Ok(cmd) = self.frames.try_recv() {
            if let WriterCmd::Batch(b) = cmd {
                self.shared
                    .counters
                    .writer_queue_depth
                    .fetch_sub(1, Ordering::Relaxed);
                self.finish(b);
            }
        }
    }
}
