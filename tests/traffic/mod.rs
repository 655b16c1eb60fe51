//! The application side of the stress suite: self-describing payloads (who sent them, in
//! which order, and bytes that reveal any corruption), and the threads that send, call and
//! serve, each logging exactly what it was told so the suite can check it against the peer's
//! own accounting.
#![allow(unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use syncpeer::{
    Bytes, Delivery, Inbound, PeerHandle, PendingRpc, RpcError, SendError, SendTimeoutError,
};

use crate::common::{DIRECT, RPC, WAIT};
use crate::harness::Rng;

pub const MAX_FRAME: usize = 4096;
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Every payload starts with: magic, side, thread, large, seq (u32 LE), len (u32 LE).
pub const HEADER: usize = 12;
pub const MAGIC: u8 = 0xa5;
pub const RESPONSE_MAGIC: u8 = 0x5a;
/// The thread number RPC requests carry.
pub const RPC_THREAD: u8 = 0xff;

pub fn payload(side: u8, thread: u8, large: bool, seq: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[MAGIC, side, thread, u8::from(large)]);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend((HEADER..len).map(|i| fill(seq, i)));
    v.into()
}

pub fn fill(seq: u32, i: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(i) as u8
}

pub fn random_payload(rng: &mut Rng, side: u8, thread: u8, seq: u32, large_one_in: u64) -> Bytes {
    let large = rng.chance(large_one_in);
    let len = if large {
        rng.range(MAX_FRAME, MAX_MESSAGE + 1)
    } else {
        rng.range(HEADER, 600)
    };
    payload(side, thread, large, seq, len)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub side: u8,
    pub thread: u8,
    pub large: bool,
    pub seq: u32,
}

/// Checks a payload byte for byte and returns what it says about itself.
pub fn parse(data: &[u8], magic: u8) -> Result<Tag, String> {
    if data.len() < HEADER || data[0] != magic {
        return Err(format!("bad header in {} bytes", data.len()));
    }
    let seq = u32::from_le_bytes(data[4..8].try_into().unwrap());
    let len = u32::from_le_bytes(data[8..12].try_into().unwrap()) as usize;
    if len != data.len() {
        return Err(format!("length {} but header says {len}", data.len()));
    }
    if let Some(i) = (HEADER..len).find(|&i| data[i] != fill(seq, i)) {
        return Err(format!("corrupt byte {i} of {len} (seq {seq})"));
    }
    Ok(Tag {
        side: data[1],
        thread: data[2],
        large: data[3] == 1,
        seq,
    })
}

pub fn response_for(request: &[u8]) -> Bytes {
    let mut v = request.to_vec();
    v[0] = RESPONSE_MAGIC;
    v.into()
}

/// What one sending thread did.
#[derive(Debug, Default)]
pub struct SenderLog {
    pub thread: u8,
    /// Seqs accepted by `send` or `send_timeout` (no receipt).
    pub plain: Vec<u32>,
    /// Seqs accepted by `send_with_receipt`, with the receipt's outcome.
    pub receipts: Vec<(u32, Delivery)>,
    pub unresolved: usize,
    pub errors: Vec<String>,
}

pub fn sender(
    handle: PeerHandle,
    side: u8,
    thread: u8,
    quota: usize,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> SenderLog {
    let mut log = SenderLog {
        thread,
        ..SenderLog::default()
    };
    let mut pending = Vec::new();
    for seq in 0..quota as u32 {
        if stop.load(Relaxed) {
            break;
        }
        let data = random_payload(&mut rng, side, thread, seq, 25);
        let refused = if rng.chance(2) {
            match handle.send_with_receipt(DIRECT, data.clone()) {
                Ok(r) => {
                    pending.push((seq, r));
                    None
                }
                Err(SendError::Closed(back)) => Some(back),
                Err(e) => {
                    log.errors.push(format!("send_with_receipt: {e:?}"));
                    break;
                }
            }
        } else if rng.chance(2) {
            // Blocks while the outbox is full; every round closes, which wakes it.
            match handle.send(DIRECT, data.clone()) {
                Ok(()) => {
                    log.plain.push(seq);
                    None
                }
                Err(SendError::Closed(back)) => Some(back),
                Err(e) => {
                    log.errors.push(format!("send: {e:?}"));
                    break;
                }
            }
        } else {
            match handle.send_timeout(DIRECT, data.clone(), WAIT) {
                Ok(()) => {
                    log.plain.push(seq);
                    None
                }
                Err(SendTimeoutError::Closed(back)) => Some(back),
                Err(e) => {
                    log.errors.push(format!("send_timeout: {e:?}"));
                    break;
                }
            }
        };
        if let Some(back) = refused {
            if back != data {
                log.errors
                    .push("a refused send handed back other bytes".into());
            }
            break;
        }
        if rng.chance(16) {
            std::thread::sleep(Duration::from_millis(rng.below(3)));
        }
    }
    // Before waiting on receipts: with a handle-drop close, this may be the last handle.
    drop(handle);
    for (seq, r) in pending {
        match r.wait_timeout(WAIT) {
            Some(d) => log.receipts.push((seq, d)),
            None => log.unresolved += 1,
        }
    }
    log
}

/// What one RPC-calling thread saw: one outcome per request started.
#[derive(Debug, Default)]
pub struct RpcLog {
    pub started: u64,
    pub ok: u64,
    pub timed_out: u64,
    pub too_many: u64,
    pub failed_at_close: u64,
    pub no_outcome: u64,
    pub errors: Vec<String>,
}

impl RpcLog {
    pub fn settle(
        &mut self,
        request: &Bytes,
        outcome: Result<Bytes, Result<PendingRpc, RpcError>>,
    ) {
        match outcome {
            Ok(resp) if resp == response_for(request) => self.ok += 1,
            Ok(_) => self.errors.push("wrong rpc response".into()),
            Err(Ok(_)) => self.no_outcome += 1,
            Err(Err(RpcError::TimedOut)) => self.timed_out += 1,
            Err(Err(RpcError::TooManyPending(_))) => self.too_many += 1,
            Err(Err(RpcError::Disconnected | RpcError::Cancelled)) => self.failed_at_close += 1,
            Err(Err(e)) => self.errors.push(format!("rpc failed: {e}")),
        }
    }
}

pub fn rpc_caller(
    handle: PeerHandle,
    side: u8,
    quota: usize,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> RpcLog {
    let timeout = Duration::from_millis(800);
    let mut log = RpcLog::default();
    let mut inflight = VecDeque::new();
    for seq in 0..quota as u32 {
        if stop.load(Relaxed) {
            break;
        }
        let request = random_payload(&mut rng, side, RPC_THREAD, seq, 30);
        match handle.rpc_start(RPC, request.clone(), timeout) {
            Ok(p) => {
                log.started += 1;
                inflight.push_back((request, p));
            }
            Err(RpcError::Disconnected) => break,
            Err(e) => {
                log.errors.push(format!("rpc_start: {e}"));
                break;
            }
        }
        if inflight.len() >= 4 {
            let (request, p) = inflight.pop_front().unwrap();
            log.settle(&request, p.wait_timeout(WAIT));
        }
    }
    drop(handle);
    for (request, p) in inflight {
        log.settle(&request, p.wait_timeout(WAIT));
    }
    log
}

/// What one side's handler threads received: direct sends per sending thread, in order.
#[derive(Debug, Default)]
pub struct ConsumerLog {
    pub delivered: HashMap<u8, Vec<(u32, bool)>>,
    pub direct: u64,
    pub requests: u64,
    pub errors: Vec<String>,
}

impl ConsumerLog {
    pub fn merge(mut self, other: ConsumerLog) -> ConsumerLog {
        for (thread, seqs) in other.delivered {
            self.delivered.entry(thread).or_default().extend(seqs);
        }
        self.direct += other.direct;
        self.requests += other.requests;
        self.errors.extend(other.errors);
        self
    }
}

pub fn consumer(inbound: Receiver<Inbound>, from: u8, mut rng: Rng) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    loop {
        match inbound.recv_timeout(WAIT) {
            Ok(Inbound::Message { protocol, data, .. }) => {
                log.direct += 1;
                match parse(&data, MAGIC) {
                    Ok(t) if t.side == from && protocol == DIRECT && t.thread != RPC_THREAD => {
                        log.delivered
                            .entry(t.thread)
                            .or_default()
                            .push((t.seq, t.large));
                    }
                    Ok(t) => log.errors.push(format!("misrouted message {t:?}")),
                    Err(e) => log.errors.push(format!("direct send: {e}")),
                }
            }
            Ok(Inbound::Request {
                data, responder, ..
            }) => {
                log.requests += 1;
                if let Err(e) = parse(&data, MAGIC) {
                    log.errors.push(format!("request: {e}"));
                }
                // Now and then the application drops a request: the caller times out.
                if !rng.chance(50) {
                    let _ = responder.respond(response_for(&data));
                }
            }
            Err(RecvTimeoutError::Disconnected) => return log,
            Err(RecvTimeoutError::Timeout) => {
                log.errors
                    .push("handler channel neither fed nor closed in time".into());
                return log;
            }
        }
    }
}
