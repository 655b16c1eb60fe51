//! The reader thread (`syncpeer-reader`): owns the read half, waits only in `mio::Poll`
//! (socket readable, or its `Waker` to stop), decodes frames and reassembles streams.
//!
//! Direct sends go straight from here to their handler: no extra thread hop on the latency
//! path, and handler order is wire order. An RPC response goes straight to its caller (see
//! `Shared::callers`). Requests, remote errors and malformed frames go to the mux, which owns
//! the RPC state; the mux always takes them, so the reader never stalls on it, and once the mux
//! has ended they are counted as unhandled. On EOF, a read error or a fatal framing error the
//! reader starts the close and exits; otherwise it keeps reading and delivering through the
//! drain until the closer tells it to stop, so the kernel never resets data the remote has not
//! read.
//!
//! Over Noise the bytes read are opened first (`transport.rs`); a Noise message that fails to
//! open, or EOF inside one, closes the connection with `InputOutputError`, counted in
//! `noise_errors`.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use mio::{Events, Interest, Poll, Token};

use super::close;
use super::handler::Handlers;
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
    /// Counts not yet added to the shared counters.
    frames: u64,
    delivered: u64,
    /// Dropped when the thread ends: the supervisor waits on it with a deadline.
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
            // Then keep reading for a moment before parking: an answer often follows within
            // tens of microseconds, and a thread parked on an idle core takes about 25 µs to
            // wake on these machines. Bounded, so an idle connection parks after `spin`.
            let mut spun = false;
            let stop = spin::poll_for(spin, None, || match self.read_once(&mut buf) {
                Err(e) => Some(Err(e)),
                Ok(Read::Stop(stop)) => Some(Ok(stop)),
                // More came: keep reading, and polling for `spin` after it.
                Ok(Read::Data(_)) => {
                    spun = true;
                    None
                }
                Ok(Read::Drained) => None,
            });
            match stop {
                Some(stop) => return stop,
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
                                Counters::add(&self.shared.counters.stream_errors, 1);
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
                match handler.deliver(msg) {
                    Ok(evicted) => {
                        self.delivered += 1;
                        if self.shared.is_closing() {
                            Counters::add(&counters.delivered_during_drain, 1);
                        }
                        if let Some(old) = evicted {
                            Counters::add(&counters.dropped_handler_full, 1);
                            self.shared
                                .warnings
                                .handler_full
                                .warn(&self.shared.remote, &old.protocol());
                        }
                    }
                    Err(msg) => {
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
        if let Err(e) = self.to_mux.send(FromReader::Message(m)) {
            // The close has ended: this RPC traffic can no longer be answered.
            e.0.count_unhandled(counters);
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
