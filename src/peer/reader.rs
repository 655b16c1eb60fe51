//! The reader thread (`syncpeer-reader`): owns the read half, decodes frames and reassembles
//! streams. It waits in `mio::Poll` (socket readable, or its `Waker` to stop), and in one
//! other place: a crossbeam `Select` for room in a full blocking handler (below).
//!
//! Direct sends go straight from here to their handler: no extra thread hop on the latency
//! path, and handler order is wire order. An RPC response goes straight to its caller (see
//! `Shared::callers`). Requests, remote errors and malformed frames go to the mux, which owns
//! the RPC state; the mux always takes them, so the reader never stalls on it, and once the mux
//! has ended they are counted as unhandled. On EOF, a read error or a fatal framing error the
//! reader starts the close, hands what it holds to blocking handlers (within the drain
//! deadline) and exits; otherwise it keeps reading and delivering through the drain until the
//! closer tells it to stop, so the kernel never resets data the remote has not read.
//!
//! # Blocking handlers
//!
//! A direct send for a [`Handler::blocking`](crate::Handler::blocking) channel that is full
//! is held ([`Held`]), and so is every later one for that channel, in order. Holding, the
//! reader goes on decoding what it has read and reading more, so RPC responses and messages
//! for other handlers keep flowing, until it holds [`HOLD_LIMIT`] bytes or the socket has
//! nothing more (then it looks at the socket again every millisecond while it holds less than
//! the limit, so that a response arriving later still gets through). It waits in a `Select`,
//! and only there: for room in a channel it holds
//! for, for the stop signal (`Shared::stop_reader`, which the closer fires at the drain
//! deadline and `abort` at once), for the start of a close (which brings a deadline), and for
//! that deadline. It never waits on the socket and a channel at once: while it waits for room
//! it reads nothing, which is how TCP flow control reaches the remote. Room for one message
//! hands over everything else that fits, then reading resumes. Stopped while holding, it
//! counts what it held in `dropped_at_close`. It polls for `spin` before parking there, as
//! the other loops do: under sustained pushback the consumer frees one slot at a time, and a
//! reader that parks is woken for each. (64 B one-way into a blocking channel of 1024 slots,
//! against the dropping handler on an unbounded channel, quick compare bench on a 2-core
//! machine at load 4 to 6: about 0.5 of its rate parking at once, a median of about 1.05,
//! from 0.5 to 1.4, polling.)
//!
//! Over Noise the bytes read are opened first (`transport.rs`); a Noise message that fails to
//! open, or EOF inside one, closes the connection with `InputOutputError`, counted in
//! `noise_errors`.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Select, Sender};
use mio::{Events, Interest, Poll, Token};

use super::close;
use super::handler::{Delivered, Handlers};
use super::held::{Flushed, Held};
use super::metrics::Counters;
use super::shared::{FromReader, Shared};
use super::socket::Half;
use super::spin;
use super::transport::Opening;
use super::{DisconnectReason, Inbound};
use crate::noise::ReadError;
use crate::proto::{FrameDecoder, MultiplexMessage, NetworkMessage, Reassembler};

pub(crate) const WAKER: Token = Token(1);
const SOCKET: Token = Token(0);

/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes held for full blocking handlers past which the reader reads nothing more until they
/// have room. What it holds stays below this plus one read (or one reassembled message).
pub(crate) const HOLD_LIMIT: usize = 64 * 1024;
/// While it holds less than [`HOLD_LIMIT`] and the socket has nothing more, how long the reader
/// waits for room before it looks at the socket again (for an RPC response, say).
const RECHECK: Duration = Duration::from_millis(1);

pub(crate) struct Reader {
    shared: Arc<Shared>,
    half: Half,
    poll: Poll,
    handlers: Handlers,
    to_mux: Sender<FromReader>,
    /// Plaintext, or the receiving half of a Noise session (see `transport.rs`).
    opening: Opening,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    /// Direct sends waiting for room in their blocking handler.
    held: Held,
    /// Counts not yet added to the shared counters.
    frames: u64,
    delivered: u64,
    /// Dropped when the thread ends: the closer waits on it with a deadline.
    _done: Sender<()>,
}

/// What one read did.
enum Read {
    /// Read this many bytes (and handled every frame they completed).
    Data(usize),
    /// Nothing to read (`WouldBlock`).
    Drained,
    Stop(Stop),
}

/// Why the read loop ended.
enum Stop {
    Eof,
    Error(DisconnectReason),
    Told,
}

impl Reader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        half: Half,
        poll: Poll,
        handlers: Handlers,
        to_mux: Sender<FromReader>,
        done: Sender<()>,
        opening: Opening,
    ) -> Reader {
        let config = &shared.config;
        Reader {
            opening,
            decoder: FrameDecoder::new(config.max_frame_size),
            reassembler: Reassembler::new(config.max_frame_size, config.max_message_size),
            shared,
            half,
            poll,
            handlers,
            to_mux,
            held: Held::new(),
            frames: 0,
            delivered: 0,
            _done: done,
        }
    }

    pub(crate) fn run(mut self) {
        let stop = match self.read_loop() {
            Ok(stop) => stop,
            Err(e) => {
                log::error!("peer {}: read failed: {e}", self.shared.remote);
                Stop::Error(DisconnectReason::InputOutputError)
            }
        };
        match stop {
            Stop::Eof => close::start(&self.shared, DisconnectReason::ConnectionClosed, false),
            Stop::Error(reason) => close::start(&self.shared, reason, false),
            Stop::Told => {}
        }
        if !matches!(stop, Stop::Told) {
            // What was read whole is handed over, within the drain deadline the close just
            // set: the remote's EOF makes its last messages no less received.
            while !self.held.is_empty() && self.wait_for_room(None).is_none() {}
        }
        let (expired, rest) = self.held.clear(Instant::now());
        if expired + rest > 0 {
            log::debug!(
                "peer {}: {} messages held for blocking handlers dropped at the close",
                self.shared.remote,
                expired + rest
            );
        }
        Counters::add(&self.shared.counters.dropped_at_close, expired + rest);
        log::debug!("peer {}: reader exits", self.shared.remote);
    }

    fn read_loop(&mut self) -> io::Result<Stop> {
        self.poll
            .registry()
            .register(&mut self.half, SOCKET, Interest::READABLE)?;
        let mut events = Events::with_capacity(4);
        let mut buf = vec![0u8; READ_CHUNK];
        let spin = self.shared.config.spin;
        // Whether the last wake-up said the remote had closed or the socket had failed. Until
        // the first wake-up nothing is known, so the first pass reads until `WouldBlock`.
        let mut closed_seen = true;
        loop {
            // Read until the socket is drained (mio is edge-triggered).
            loop {
                // Holding too much for full blocking handlers: read nothing more until they
                // have room.
                while self.held.bytes() >= HOLD_LIMIT {
                    if let Some(stop) = self.wait_for_room(None) {
                        return Ok(stop);
                    }
                }
                match self.read_once(&mut buf)? {
                    Read::Stop(stop) => return Ok(stop),
                    // A short read drained the socket: data arriving later raises a new edge,
                    // so wait for it rather than spend a system call to learn `WouldBlock`. Not
                    // if the remote has closed: its EOF raises no new edge and must be read now.
                    Read::Data(n) if n < buf.len() && !closed_seen => break,
                    Read::Data(_) => {}
                    Read::Drained => break,
                }
            }
            // Nothing more to read for now, and messages held for full blocking handlers:
            // wait for room (not for the socket), then read again.
            // Holding less than the limit, it looks at the socket again every `RECHECK`, so
            // that an RPC response arriving meanwhile still reaches its caller.
            if !self.held.is_empty() {
                if let Some(stop) = self.wait_for_room(Some(RECHECK)) {
                    return Ok(stop);
                }
                continue;
            }
            // Then keep reading for a moment before parking: an answer often follows within
            // tens of microseconds, and a thread parked on an idle core takes about 25 µs to
            // wake on these machines. Bounded, so an idle connection parks after `spin`.
            let mut spun = false;
            let stop = spin::poll_for(spin, None, || match self.read_once(&mut buf) {
                Err(e) => Some(Err(e)),
                Ok(Read::Stop(stop)) => Some(Ok(Some(stop))),
                // A blocking handler is full: back to the loop above, which waits for it.
                Ok(Read::Data(_)) if !self.held.is_empty() => Some(Ok(None)),
                // More came: keep reading, and polling for `spin` after it.
                Ok(Read::Data(_)) => {
                    spun = true;
                    None
                }
                Ok(Read::Drained) => None,
            });
            match stop {
                Some(Ok(Some(stop))) => return Ok(stop),
                Some(Ok(None)) => continue,
                Some(Err(e)) => return Err(e),
                // Data came while polling: the deadline starts again from it.
                None if spun => continue,
                None => {}
            }
            match self.poll.poll(&mut events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            closed_seen = events
                .iter()
                .any(|e| e.token() == SOCKET && (e.is_read_closed() || e.is_error()));
        }
    }

    /// Waits until a message held for a full blocking handler has gone to it (and hands over
    /// whatever else then fits), without reading the socket. `Some` if the reader must stop
    /// instead: told to (the closer at the drain deadline, `abort`), or the drain deadline
    /// has passed.
    /// With `recheck`, it gives up after that long (returns `None`) so that the caller can
    /// look at the socket again.
    fn wait_for_room(&mut self, recheck: Option<Duration>) -> Option<Stop> {
        let flushed = self.held.flush(&self.handlers, Instant::now());
        self.settle(flushed);
        if flushed != Flushed::default() || self.held.is_empty() {
            return None;
        }
        let waiting = self.held.waiting(&self.handlers);
        let shared = self.shared.clone();
        let recheck_at = recheck.map(|d| Instant::now() + d);
        loop {
            if shared.reader_stop.load(Ordering::SeqCst) {
                return Some(Stop::Told);
            }
            let closing = shared.is_closing();
            let deadline = if closing { shared.deadline() } else { None };
            let mut sel = Select::new();
            for (_, tx) in &waiting {
                sel.send(tx);
            }
            let i_stop = sel.recv(shared.reader_stop_signal.receiver());
            // A close started meanwhile brings a deadline: wake up to take it into account.
            let i_close = (!closing).then(|| sel.recv(shared.outbox.input_closed.receiver()));
            let wake_at = match (deadline, recheck_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let oper = match spin::poll_for(shared.config.spin, wake_at, || sel.try_select().ok()) {
                Some(oper) => oper,
                None => match wake_at {
                    None => sel.select(),
                    Some(d) => match sel.select_deadline(d) {
                        Ok(oper) => oper,
                        // The drain deadline: stop. Only the recheck: look at the socket.
                        Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                            return Some(Stop::Told);
                        }
                        Err(_) => return None,
                    },
                },
            };
            let i = oper.index();
            if let Some((sink, tx)) = waiting.get(i) {
                let flushed =
                    self.held
                        .send_selected(&self.handlers, oper, *sink, tx, Instant::now());
                self.settle(flushed);
                return None;
            }
            if i == i_stop {
                let _ = oper.recv(shared.reader_stop_signal.receiver());
                return Some(Stop::Told);
            }
            debug_assert_eq!(Some(i), i_close);
            let _ = oper.recv(shared.outbox.input_closed.receiver());
        }
    }

    /// Counts what handing over held messages did.
    fn settle(&mut self, f: Flushed) {
        let c = &self.shared.counters;
        Counters::add(&c.direct_sends_delivered, f.delivered);
        if self.shared.is_closing() {
            Counters::add(&c.delivered_during_drain, f.delivered);
        }
        if f.dropped > 0 {
            Counters::add(&c.dropped_handler_full, f.dropped);
            self.shared
                .warnings
                .handler_full
                .warn(&self.shared.remote, &"blocking handler gone");
        }
    }

    /// One read and everything it completes.
    fn read_once(&mut self, buf: &mut [u8]) -> io::Result<Read> {
        if self.shared.reader_stop.load(Ordering::Relaxed) {
            return Ok(Read::Stop(Stop::Told));
        }
        match self.half.read(buf) {
            Ok(0) => {
                if let Err(e) = self.opening.finish() {
                    return Ok(Read::Stop(self.noise_failed(e)));
                }
                if self.decoder.is_idle() {
                    return Ok(Read::Stop(Stop::Eof));
                }
                log::error!(
                    "peer {}: connection ended inside a frame ({} bytes buffered)",
                    self.shared.remote,
                    self.decoder.buffered()
                );
                Ok(Read::Stop(Stop::Error(DisconnectReason::InputOutputError)))
            }
            Ok(n) => {
                let opened = self.opening.feed(&buf[..n], &mut self.decoder);
                // What authenticated before a bad Noise message is handled first.
                let stop = self.decode_all();
                let stop = match opened {
                    Err(e) if stop.is_none() => Some(self.noise_failed(e)),
                    _ => stop,
                };
                // Counted once per read, not per frame.
                let c = &self.shared.counters;
                Counters::add(&c.bytes_in, n as u64);
                Counters::add(&c.frames_in, std::mem::take(&mut self.frames));
                Counters::add(
                    &c.direct_sends_delivered,
                    std::mem::take(&mut self.delivered),
                );
                Ok(stop.map_or(Read::Data(n), Read::Stop))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Read::Drained),
            // Interrupted before reading anything: read again, as after a full buffer.
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(Read::Data(buf.len())),
            Err(e) => Err(e),
        }
    }

    /// A Noise message refused (tampered, bad length, cut by EOF): counted, logged, fatal.
    fn noise_failed(&self, e: ReadError) -> Stop {
        Counters::add(&self.shared.counters.noise_errors, 1);
        log::error!("peer {}: {e}", self.shared.remote);
        Stop::Error(DisconnectReason::InputOutputError)
    }

    /// Handles every complete frame buffered; `Some` if the connection cannot go on.
    fn decode_all(&mut self) -> Option<Stop> {
        loop {
            match self.decoder.decode() {
                Ok(None) => return None,
                Ok(Some(frame)) => {
                    self.frames += 1;
                    log::trace!(
                        "peer {}: frame in: {}",
                        self.shared.remote,
                        frame_kind(&frame)
                    );
                    match frame {
                        MultiplexMessage::Message(m) => self.dispatch(m),
                        MultiplexMessage::Stream(s) => match self.reassembler.handle(s) {
                            Ok(Some(m)) => self.dispatch(m),
                            Ok(None) => {}
                            Err(e) => {
                                let c = &self.shared.counters;
                                Counters::add(&c.stream_errors, 1);
                                if e.loses_message() {
                                    Counters::add(&c.dropped_stream_rejected, 1);
                                }
                                self.shared.warnings.stream.warn(&self.shared.remote, &e);
                            }
                        },
                    }
                }
                Err(e) if e.is_fatal() => {
                    log::error!("peer {}: {e}", self.shared.remote);
                    return Some(Stop::Error(DisconnectReason::InputOutputError));
                }
                Err(e) => {
                    Counters::add(&self.shared.counters.malformed_frames, 1);
                    self.shared.warnings.malformed.warn(&self.shared.remote, &e);
                    // The mux answers with ParsingError; if it has ended we are closing anyway.
                    let _ = self.to_mux.send(FromReader::Malformed(e));
                }
            }
        }
    }

    fn dispatch(&mut self, m: NetworkMessage) {
        let counters = &self.shared.counters;
        let m = match m {
            NetworkMessage::DirectSendMsg(d) => {
                let Some(handler) = self.handlers.get(d.protocol_id) else {
                    Counters::add(&counters.dropped_unknown_protocol, 1);
                    self.shared
                        .warnings
                        .unknown_protocol
                        .warn(&self.shared.remote, &d.protocol_id);
                    return;
                };
                let msg = Inbound::Message {
                    from: self.shared.remote,
                    protocol: d.protocol_id,
                    data: d.raw_msg,
                };
                if handler.blocking_sender().is_some() {
                    let sink = self.handlers.sink(d.protocol_id);
                    if self.held.holds(sink) {
                        // Behind the ones already waiting for that channel.
                        return self.held.push(sink, msg);
                    }
                }
                match handler.deliver(msg) {
                    Delivered::Taken => {
                        self.delivered += 1;
                        if self.shared.is_closing() {
                            Counters::add(&counters.delivered_during_drain, 1);
                        }
                    }
                    Delivered::Full(msg) => {
                        let sink = self.handlers.sink(d.protocol_id);
                        self.held.push(sink, msg);
                    }
                    // An eviction leaves the queue as full as before: one drop, no delivery.
                    Delivered::Evicted(msg) | Delivered::Dropped(msg) => {
                        Counters::add(&counters.dropped_handler_full, 1);
                        self.shared
                            .warnings
                            .handler_full
                            .warn(&self.shared.remote, &msg.protocol());
                    }
                }
                return;
            }
            NetworkMessage::RpcResponse(r) => match self.shared.take_caller(r.request_id) {
                // The caller is answered from this thread: one hop less per RPC.
                Some(caller) => {
                    let _ = caller.try_send(Ok(r.raw_response));
                    let _ = self.to_mux.send(FromReader::Completed(r.request_id));
                    return;
                }
                None => NetworkMessage::RpcResponse(r),
            },
            other => other,
        };
        let m = FromReader::Message(m);
        let request = m.is_request();
        match self.to_mux.send(m) {
            Ok(()) if request => {
                self.shared.requests_to_mux.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            // The close has ended: this RPC traffic can no longer be answered.
            Err(e) => e.0.count_unhandled(counters),
        }
    }
}

fn frame_kind(m: &MultiplexMessage) -> &'static str {
    match m {
        MultiplexMessage::Message(NetworkMessage::DirectSendMsg(_)) => "direct send",
        MultiplexMessage::Message(NetworkMessage::RpcRequest(_)) => "rpc request",
        MultiplexMessage::Message(NetworkMessage::RpcResponse(_)) => "rpc response",
        MultiplexMessage::Message(NetworkMessage::Error(_)) => "error",
        MultiplexMessage::Stream(_) => "stream",
    }
}
