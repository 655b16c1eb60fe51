//! Two sessions wired back to back on a virtual clock.
//!
//! [`Pair`] owns sessions `a` and `b`, the [`FrameDecoder`] in front of each, and a clock made of
//! one base `Instant` (the only clock read) plus an offset the tests advance by hand. Frames go
//! through the real codec: `poll_transmit` → `encode_frame_split` → bytes → `FrameDecoder` →
//! `handle_frame`, and malformed frames to `handle_malformed`. Tests take the frames themselves
//! (`transmit`) when they want to drop, reorder, duplicate or corrupt some before delivering
//! them (`deliver`, `receive`). The tests are in `rpcs.rs` (request bookkeeping and timers) and
//! `streams.rs` (fragmentation, wire order, malformed frames, close).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::proto::codec::{FrameDecoder, encode_frame_split};
use crate::proto::rpc::ReplyRefused;
use crate::proto::stream::fragment_size;

const P: ProtocolId = ProtocolId(7);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Tokens (`R`) and tags (`K`) are plain numbers so assertions can tell them apart.
type Tok = u32;

fn small_config() -> SessionConfig {
    SessionConfig {
        max_frame_size: 256,
        max_message_size: 256 * 20,
        max_concurrent_outbound_rpcs: 8,
        max_concurrent_inbound_rpcs: 4,
        inbound_rpc_timeout: Duration::from_secs(10),
    }
}

/// The `PeerConfig` defaults.
fn default_config() -> SessionConfig {
    SessionConfig {
        max_frame_size: 4 * MIB,
        max_message_size: 64 * MIB,
        max_concurrent_outbound_rpcs: 100,
        max_concurrent_inbound_rpcs: 100,
        inbound_rpc_timeout: Duration::from_secs(10),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// One end of the wire.
struct End {
    config: SessionConfig,
    session: Session<Tok, Tok>,
    /// Decodes the bytes arriving at this end.
    decoder: FrameDecoder,
    /// The completions of the frames this end transmitted, in wire order.
    completed: Vec<Completion<Tok>>,
}

struct Pair {
    base: Instant,
    offset: Duration,
    a: End,
    b: End,
}

impl End {
    fn new(config: SessionConfig) -> End {
        End {
            config,
            session: Session::new(config),
            decoder: FrameDecoder::new(config.max_frame_size),
            completed: Vec::new(),
        }
    }
}

impl Pair {
    fn new(config: SessionConfig) -> Pair {
        Pair::with_configs(config, config)
    }

    fn with_configs(a: SessionConfig, b: SessionConfig) -> Pair {
        Pair {
            base: Instant::now(),
            offset: Duration::ZERO,
            a: End::new(a),
            b: End::new(b),
        }
    }

    fn now(&self) -> Instant {
        self.base + self.offset
    }

    fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    fn end(&mut self, side: Side) -> &mut End {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Takes one frame from `from`, logging its completion.
    fn poll(&mut self, from: Side) -> Option<Transmit<Tok>> {
        let end = self.end(from);
        let t = end.session.poll_transmit()?;
        // Every frame the session emits must fit the limit.
        assert!(t.message.encoded_len() <= end.config.max_frame_size);
        if let Some(c) = &t.completes {
            end.completed.push(Completion {
                len: c.len,
                tag: c.tag,
            });
        }
        Some(t)
    }

    /// Takes every frame `from` has to send.
    fn transmit(&mut self, from: Side) -> Vec<MultiplexMessage> {
        std::iter::from_fn(|| self.poll(from))
            .map(|t| t.message)
            .collect()
    }

    /// Puts frames on the wire towards `to` and lets `to` read them.
    fn deliver(&mut self, to: Side, frames: &[MultiplexMessage]) {
        let max = match to {
            Side::A => self.b.config.max_frame_size,
            Side::B => self.a.config.max_frame_size,
        };
        for frame in frames {
            let bytes = encode(frame, max);
            self.receive(to, &bytes);
        }
    }

    /// Bytes arrive at `to`: decode every whole frame and hand it to the session.
    fn receive(&mut self, to: Side, bytes: &[u8]) {
        let now = self.now();
        let end = self.end(to);
        end.decoder.extend(bytes);
        loop {
            match end.decoder.decode() {
                Ok(Some(frame)) => end.session.handle_frame(now, frame),
                Ok(None) => break,
                Err(e) => {
                    assert!(!e.is_fatal(), "fatal frame error {e}");
                    end.session.handle_malformed(&e, Default::default());
                }
            }
        }
    }

    /// Moves frames both ways until neither side has anything to send.
    fn pump(&mut self) {
        loop {
            let to_b = self.transmit(Side::A);
            let to_a = self.transmit(Side::B);
            if to_b.is_empty() && to_a.is_empty() {
                break;
            }
            self.deliver(Side::B, &to_b);
            self.deliver(Side::A, &to_a);
        }
    }

    fn events(&mut self, side: Side) -> Vec<Event<Tok>> {
        let s = &mut self.end(side).session;
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// Answers the request in `slot` at the current virtual time.
    fn respond(&mut self, side: Side, slot: u64, data: &'static [u8], tag: Tok) {
        let now = self.now();
        let s = &mut self.end(side).session;
        s.respond(slot, now, Bytes::from_static(data), tag).unwrap();
    }

    fn start_rpc(&mut self, side: Side, data: &'static [u8], timeout: Duration, token: Tok) -> u32 {
        let now = self.now();
        let s = &mut self.end(side).session;
        let id = s.start_rpc(
            now,
            P,
            Bytes::from_static(data),
            timeout,
            token,
            token + 1000,
        );
        id.unwrap().0
    }
}

/// One frame as the writer puts it on the wire (the vectored form, glued back together).
fn encode(frame: &MultiplexMessage, max_frame_size: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let payload = encode_frame_split(frame, max_frame_size, &mut out).unwrap();
    out.extend_from_slice(&payload.unwrap_or_default());
    out.to_vec()
}

#[track_caller]
fn only(events: Vec<Event<Tok>>) -> Event<Tok> {
    assert_eq!(events.len(), 1, "expected one event, got {events:?}");
    events.into_iter().next().unwrap()
}

/// `(protocol, data, slot, deadline)` of a `Request`.
#[track_caller]
fn request(ev: Event<Tok>) -> (ProtocolId, Bytes, u64, Instant) {
    match ev {
        Event::Request {
            protocol,
            data,
            slot,
            deadline,
        } => (protocol, data, slot, deadline),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[track_caller]
fn slots(events: Vec<Event<Tok>>) -> Vec<u64> {
    events.into_iter().map(|e| request(e).2).collect()
}

/// `(request_id, token, result)` of an `RpcDone`.
#[track_caller]
fn rpc_done(ev: Event<Tok>) -> (u32, Tok, Result<Bytes, RpcFailure>) {
    match ev {
        Event::RpcDone {
            request_id,
            token,
            result,
        } => (request_id.0, token, result),
        other => panic!("expected an rpc outcome, got {other:?}"),
    }
}

#[track_caller]
fn message(ev: Event<Tok>) -> Bytes {
    match ev {
        Event::Message { protocol, data } => {
            assert_eq!(protocol, P);
            data
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

fn ok(data: &'static [u8]) -> Result<Bytes, RpcFailure> {
    Ok(Bytes::from_static(data))
}

/// A payload that no misordering, loss or duplication of its pieces leaves unchanged: a
/// counter every 4 KiB and on the last byte.
fn pattern(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    for (i, block) in v.chunks_mut(4 * KIB).enumerate() {
        let n = block.len().min(8);
        block[..n].copy_from_slice(&(i as u64 + 1).to_le_bytes()[..n]);
    }
    if let Some(last) = v.last_mut() {
        *last = 0xee;
    }
    v.into()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

mod rpcs;
mod streams;
