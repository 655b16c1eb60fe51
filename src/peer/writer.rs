//! The writer thread (`syncpeer-writer`): owns the socket's write side while it holds a batch
//! taken from the [lane](super::lane), which is everything queued in wire order since it last
//! looked (batching is where throughput comes from). When the lane is empty it parks; an
//! appender finding it parked either rings it or, on an idle connection, writes the bytes
//! itself. The socket is non-blocking; on `WouldBlock` the writer waits on its own `mio::Poll`
//! for writability, bounded by `write_timeout` without progress and, once a close has started,
//! by the drain deadline. Past either, or after a write error or an abort, every message not yet
//! written is counted as abandoned (and its receipt resolved), so each accepted message gets
//! exactly one outcome. Once the mux has closed the lane and the writer has emptied it, it
//! half-closes.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::DisconnectReason;
use super::metrics::Counters;
use super::shared::{Batch, Shared, write_batches};
use super::socket::Half;

pub(crate) const WAKER: Token = Token(1);
const SOCKET: Token = Token(0);

pub(crate) struct Writer {
    shared: Arc<Shared>,
    half: Arc<Half>,
    poll: Poll,
    /// Once set, nothing more is written; everything is abandoned.
    broken: bool,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, half: Arc<Half>, poll: Poll) -> Writer {
        Writer {
            shared,
            half,
            poll,
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
        let shared = self.shared.clone();
        let counters = &shared.counters;
        while let Some(mut batch) = shared.next_batch() {
            Counters::add(&counters.write_batches, 1);
            Counters::add(&counters.writer_queue_depth, 1);
            if !self.broken && !self.shared.is_aborted() {
                self.write_batch(&mut batch);
            }
            batch.abandon(counters);
            counters.writer_queue_depth.fetch_sub(1, Ordering::Relaxed);
            shared.done_writing();
        }
        let how = if self.shared.is_aborted() {
            Shutdown::Both
        } else {
            Shutdown::Write
        };
        // Half-close: the remote reads EOF after our last byte. Errors mean it is gone already.
        let _ = self.half.shutdown(how);
        self.shared.lane.drop_socket();
        log::debug!("peer {}: writer exits", self.shared.remote);
    }

    fn fail(&mut self, reason: DisconnectReason) {
        self.broken = true;
        self.shared.begin_close(reason, false);
    }

    /// Writes the whole batch, or gives up on it (the caller abandons what is left).
    fn write_batch(&mut self, batch: &mut Batch) {
        let mut events = Events::with_capacity(4);
        let mut last_progress = Instant::now();
        while !batch.is_written() {
            if self.broken || self.shared.is_aborted() {
                return;
            }
            let result = write_batches(
                &self.half,
                std::slice::from_mut(batch),
                &self.shared.counters,
            );
            match result {
                Ok(0) => {
                    log::error!("peer {}: socket accepts no more bytes", self.shared.remote);
                    self.fail(DisconnectReason::InputOutputError);
                }
                Ok(_) => last_progress = Instant::now(),
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
}
