//! The writer thread (`syncpeer-writer`): the only thread that writes to the socket. It waits on
//! the frames channel for a [`Batch`] or `DrainAndClose`, takes everything queued behind the
//! first item too, and writes it all with as few vectored writes as the kernel allows
//! (batching is where throughput comes from).
//!
//! The socket is non-blocking; on `WouldBlock` the writer waits on its own `mio::Poll` for
//! writability, bounded by `write_timeout` without progress and, once a close has started, by
//! the drain deadline. Past either, after a write error, or on abort, it gives up: it writes
//! nothing more, ever (a frame, or over Noise a Noise message, may have been cut, and nothing
//! may follow it), and every
//! message not yet written, in the batch at hand and in every batch that comes after, is
//! settled as abandoned, its receipt resolved. On `DrainAndClose` it half-closes the socket,
//! so the remote reads EOF after the last byte, and ends.
//!
//! Over Noise the writer seals its batches' plaintext and writes the ciphertext instead
//! (`transport.rs`), and a message counts as written when the Noise message holding its last
//! byte is whole on the wire.

use std::io::ErrorKind;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::DisconnectReason;
use super::batch::{self, Batch, Settled, ToWriter};
use super::close;
use super::metrics::Counters;
use super::shared::Shared;
use super::socket::Half;
use super::spin;
use super::transport::{self, Sealing};

const WAKER: Token = Token(1);
const SOCKET: Token = Token(0);

/// Most slices handed to one `writev`.
const MAX_IOV: usize = 64;
/// Most batches taken from the channel for one round of writes.
const MAX_BATCHES: usize = 64;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    half: Half,
    /// Created at the first `WouldBlock`: most connections never wait for the socket, and a
    /// poll and its waker cost four system calls at every connection's start.
    poll: Option<Poll>,
    frames: Receiver<ToWriter>,
    /// Plaintext, or the sending half of a Noise session (see `transport.rs`).
    sealing: Sealing,
    /// Once set, nothing more is written; everything is abandoned.
    broken: bool,
}

/// However the writer ends (`DrainAndClose`, or a panic), the socket is shut down, so that the
/// remote learns of it: a half-close after the last byte when everything went out, both
/// directions when the writer gave up or the close is an abort.
impl Drop for Writer {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            // Before the shutdown below lets the remote close first: the reason is the panic.
            self.shared.panicked.store(true, Ordering::SeqCst);
            self.fail();
        }
        let how = if self.shared.is_aborted() || self.broken || panicking {
            Shutdown::Both
        } else {
            Shutdown::Write
        };
        // Errors mean the remote is gone already.
        let _ = self.half.shutdown(how);
    }
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        half: Half,
        frames: Receiver<ToWriter>,
        sealing: Sealing,
    ) -> Writer {
        Writer {
            shared,
            half,
            poll: None,
            frames,
            sealing,
            broken: false,
        }
    }

    pub(crate) fn run(mut self) {
        let mut batches: Vec<Batch> = Vec::new();
        loop {
            let Some(first) = self.next() else {
                // Every sender is gone without the marker: the mux and the closer both ended
                // abnormally. Nothing more can come.
                break;
            };
            let mut drain = false;
            match first {
                ToWriter::Batch(b) => batches.push(b),
                ToWriter::DrainAndClose => drain = true,
            }
            while !drain && batches.len() < MAX_BATCHES {
                match self.frames.try_recv() {
                    Ok(ToWriter::Batch(b)) => batches.push(b),
                    Ok(ToWriter::DrainAndClose) => drain = true,
                    Err(_) => break,
                }
            }
            Counters::add(&self.shared.counters.write_batches, batches.len() as u64);
            if !self.broken && !self.shared.is_aborted() {
                self.write_all(&mut batches);
            }
            let mut abandoned = Settled::default();
            for b in batches.drain(..) {
                b.abandon(&mut abandoned);
            }
            self.shared.count_abandoned(abandoned);
            if drain {
                break;
            }
        }
        log::debug!("peer {}: writer exits", self.shared.remote);
    }

    /// The next item: polls for a moment first (see `spin`), then blocks.
    fn next(&self) -> Option<ToWriter> {
        spin::poll_for(self.shared.config.spin, None, || {
            self.frames.try_recv().ok()
        })
        .or_else(|| self.frames.recv().ok())
    }

    /// Gives up for good, and closes the connection.
    fn fail(&mut self) {
        self.broken = true;
        self.shared.write_failed.store(true, Ordering::SeqCst);
        close::start(&self.shared, DisconnectReason::InputOutputError, false);
    }

    /// Writes every batch whole, or gives up (the caller abandons what is left).
    fn write_all(&mut self, batches: &mut [Batch]) {
        let mut last_progress = Instant::now();
        while !batches.iter().all(Batch::is_written) {
            if self.broken || self.shared.is_aborted() {
                return;
            }
            match self.write_once(batches) {
                Ok(0) => {
                    log::error!("peer {}: socket accepts no more bytes", self.shared.remote);
                    self.fail();
                }
                Ok(_) => last_progress = Instant::now(),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Before the deadline is read: a close that starts after this finds the
                    // waker, and one that started before has its deadline read below.
                    if let Err(e) = self.ensure_poll() {
                        log::error!("peer {}: cannot poll the socket: {e}", self.shared.remote);
                        self.fail();
                        continue;
                    }
                    let config = &self.shared.config;
                    let write_deadline =
                        crate::proto::deadline_after(last_progress, config.write_timeout);
                    let drain_deadline = self.shared.deadline();
                    let deadline = drain_deadline.map_or(write_deadline, |d| d.min(write_deadline));
                    let now = Instant::now();
                    if now >= deadline {
                        if now >= write_deadline {
                            log::error!(
                                "peer {}: no write progress for {:?}",
                                self.shared.remote,
                                config.write_timeout
                            );
                            self.fail();
                        } else {
                            // The drain deadline passed: the rest is abandoned, the close's
                            // reason stands.
                            self.broken = true;
                            self.shared.write_failed.store(true, Ordering::SeqCst);
                        }
                        continue;
                    }
                    let poll = self.poll.as_mut().expect("created above");
                    // Only the wake-up matters, not which event it was.
                    let mut events = Events::with_capacity(2);
                    match poll.poll(&mut events, Some(deadline - now)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::error!("peer {}: poll failed: {e}", self.shared.remote);
                            self.fail();
                        }
                    }
                }
                Err(e) => {
                    log::error!("peer {}: write failed: {e}", self.shared.remote);
                    self.fail();
                }
            }
        }
    }

    /// Creates the poll on which the writer waits for a writable socket, and publishes its
    /// waker (`Shared::writer_waker`) for the close to interrupt the wait.
    fn ensure_poll(&mut self) -> std::io::Result<()> {
        if self.poll.is_some() {
            return Ok(());
        }
        let poll = Poll::new()?;
        let fd = self.half.raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), SOCKET, Interest::WRITABLE)?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        // Only this thread sets it, once.
        let _ = self.shared.writer_waker.set(waker);
        self.poll = Some(poll);
        Ok(())
    }

    /// One vectored write of as much as the socket takes; settles what it completes.
    fn write_once(&mut self, batches: &mut [Batch]) -> std::io::Result<usize> {
        if let Sealing::Noise(out) = &mut self.sealing {
            return transport::write_sealed(&self.half, &self.shared, out, batches);
        }
        let slices = batch::unwritten(batches, MAX_IOV);
        let written = self.half.write_vectored(&slices)?;
        drop(slices);
        self.shared
            .count_write(written, batch::advance(batches, written));
        Ok(written)
    }
}
