//! The writer thread (`syncpeer-writer`): owns the write half and receives, through one FIFO
//! channel, batches of encoded frames and finally `DrainAndClose`.
//!
//! It gathers every batch already queued into one vectored write (batching is where
//! throughput comes from). The socket is non-blocking; on `WouldBlock` the writer waits on its
//! own `mio::Poll` for writability, bounded by `write_timeout` without progress and, once a close
//! has started, by the drain deadline. Past either, or after a write error or an abort, every
//! message not yet written is counted as abandoned (and its receipt resolved), so each
//! accepted message gets exactly one outcome.

use std::collections::VecDeque;
use std::io::{ErrorKind, IoSlice};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};

use super::DisconnectReason;
use super::handle::Delivery;
use super::metrics::Counters;
use super::shared::{Batch, Shared, WriterCmd};
use super::socket::Half;

pub(crate) const WAKER: Token = Token(1);
const SOCKET: Token = Token(0);

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;
/// Most batches gathered before writing.
const MAX_GATHER: usize = 64;
/// Bytes past which no more batches are gathered: whatever the writer holds is ahead of a
/// message sent now, so a stream's 4 MiB fragments are taken one at a time.
const GATHER_BYTES: usize = 512 * 1024;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    half: Half,
    poll: Poll,
    frames: Receiver<WriterCmd>,
    queue: VecDeque<Batch>,
    /// Bytes of the front batch already written.
    offset: usize,
    /// Marks of the front batch already resolved.
    next_mark: usize,
    /// Once set, nothing more is written; everything is abandoned.
    broken: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        half: Half,
        poll: Poll,
        frames: Receiver<WriterCmd>,
    ) -> Writer {
        Writer {
            shared,
            half,
            poll,
            frames,
            queue: VecDeque::new(),
            offset: 0,
            next_mark: 0,
            broken: false,
        }
    }

    pub(crate) fn run(mut self) {
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut self.half, SOCKET, Interest::WRITABLE)
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
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if self.broken || self.shared.is_aborted() {
                    b.abandon_from(0, &self.shared.counters);
                } else {
                    self.queue.push_back(b);
                }
                false
            }
            WriterCmd::DrainAndClose => true,
        }
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
            match self.write_once() {
                Ok(0) => {
                    log::error!("peer {}: socket accepts no more bytes", self.shared.remote);
                    self.fail(DisconnectReason::InputOutputError);
                }
                Ok(n) => {
                    last_progress = Instant::now();
                    self.advance(n);
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

    fn write_once(&mut self) -> std::io::Result<usize> {
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV);
        let mut skip = self.offset;
        'outer: for batch in &self.queue {
            for chunk in &batch.chunks {
                if skip >= chunk.len() {
                    skip -= chunk.len();
                    continue;
                }
                slices.push(IoSlice::new(&chunk[skip..]));
                skip = 0;
                if slices.len() == MAX_IOV {
                    break 'outer;
                }
            }
            skip = 0;
        }
        let n = self.half.write_vectored(&slices)?;
        Counters::add(&self.shared.counters.write_calls, 1);
        Counters::add(&self.shared.counters.wire_bytes_out, n as u64);
        Ok(n)
    }

    /// Records `n` more bytes written: resolves the messages they complete.
    fn advance(&mut self, mut n: usize) {
        let (mut messages, mut bytes) = (0, 0);
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let step = n.min(front.len - self.offset);
            self.offset += step;
            n -= step;
            while let Some(mark) = front.marks.get_mut(self.next_mark) {
                if mark.end > self.offset {
                    break;
                }
                messages += 1;
                bytes += mark.len as u64;
                if let Some(r) = mark.receipt.take() {
                    r.resolve(Delivery::Written);
                }
                self.next_mark += 1;
            }
            if self.offset == front.len {
                self.queue.pop_front();
                self.offset = 0;
                self.next_mark = 0;
            }
        }
        // Once per write call, not per message.
        let counters = &self.shared.counters;
        Counters::add(&counters.messages_written, messages);
        Counters::add(&counters.bytes_written, bytes);
    }

    /// Abandons the batches taken from the channel (not those still in it).
    fn abandon_local(&mut self) {
        let mut first = self.next_mark;
        while let Some(batch) = self.queue.pop_front() {
            batch.abandon_from(first, &self.shared.counters);
            first = 0;
        }
        self.offset = 0;
        self.next_mark = 0;
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
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                b.abandon_from(0, &self.shared.counters);
            }
        }
    }
}
