//! Order: what one thread does (direct sends with and without receipts, RPC requests, streamed
//! messages, responses) reaches the wire in the order it did it, since all of it travels through
//! the one outbox, the mux and the frames channel. Also: inline handlers run on the
//! connection's own threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use crossbeam_channel::Receiver;
use syncpeer::proto::{FrameDecoder, MultiplexMessage, NetworkMessage, StreamMessage};
use syncpeer::{
    Bytes, DisconnectReason, Handler, Inbound, PeerConfig, PeerHandle, PeerId, ProtocolId,
};

/// Frames of 16 KiB, so that a 20-40 KiB message is streamed.
fn small_frames() -> PeerConfig {
    PeerConfig {
        max_frame_size: 16 * 1024,
        max_message_size: 1024 * 1024,
        ..PeerConfig::default()
    }
}

/// A payload that starts with (thread, sequence number).
fn tagged(thread: u32, seq: u32, len: usize) -> Bytes {
    let mut v = vec![0xAB; len.max(8)];
    v[..4].copy_from_slice(&thread.to_be_bytes());
    v[4..8].copy_from_slice(&seq.to_be_bytes());
    Bytes::from(v)
}

fn tag_of(data: &[u8]) -> (u32, u32) {
    let word = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().unwrap());
    (word(0), word(4))
}

/// The tag of the frame that opens a message (a whole message, or a stream's header); `None`
/// for a stream's later fragments.
fn opening_tag(frame: &MultiplexMessage) -> Option<(u32, u32)> {
    let message = match frame {
        MultiplexMessage::Message(m) => m,
        MultiplexMessage::Stream(StreamMessage::Header(h)) => &h.message,
        MultiplexMessage::Stream(StreamMessage::Fragment(_)) => return None,
    };
    match message {
        NetworkMessage::DirectSendMsg(d) => Some(tag_of(&d.raw_msg)),
        NetworkMessage::RpcRequest(r) => Some(tag_of(&r.raw_request)),
        other => panic!("unexpected message {other:?}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Send,
    Receipt,
    Rpc,
    Streamed(usize),
}

/// Each thread's repeatable mix of messages, and after which ones it pauses.
fn plan(thread: u32, n: u32) -> Vec<(Kind, bool)> {
    // A small LCG: a different, repeatable mix per thread.
    let mut x = 0x9E37_79B9_u64 ^ u64::from(thread + 1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let roll = (x >> 33) % 100;
            let kind = match roll {
                0..60 => Kind::Send,
                60..75 => Kind::Receipt,
                75..85 => Kind::Rpc,
                _ => Kind::Streamed(20_000 + (x >> 40) as usize % 20_000),
            };
            (kind, roll.is_multiple_of(37))
        })
        .collect()
}

/// Invariant 4: each thread mixes small direct sends (with and without receipts), RPC
/// requests and streamed messages, with pauses that let the connection go idle. On the wire, a
/// message opens only after every message its thread accepted earlier has opened, except that
/// a small message may pass a streamed one (fragments interleave; streams wait for each other).
#[test]
fn acceptance_order_is_wire_order_across_sends_receipts_rpcs_and_streams() {
    const THREADS: u32 = 2;
    const PER_THREAD: u32 = 400;
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (h, _, _) = spawn_peer(socket, 9, small_frames(), &[]);
        let accepted = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (h, accepted) = (h.clone(), accepted.clone());
                std::thread::spawn(move || {
                    let mut receipts = Vec::new();
                    for (seq, (kind, pause)) in (0..).zip(plan(thread, PER_THREAD)) {
                        match kind {
                            Kind::Send => h.send(DIRECT, tagged(thread, seq, 100)).unwrap(),
                            Kind::Receipt => {
                                receipts.push(h.send_with_receipt(DIRECT, tagged(thread, seq, 64)))
                            }
                            // Never answered: dropping the pending call stops the wait, the
                            // request is written all the same.
                            Kind::Rpc => drop(h.rpc_start(RPC, tagged(thread, seq, 50), WAIT)),
                            Kind::Streamed(len) => {
                                h.send(DIRECT, tagged(thread, seq, len)).unwrap()
                            }
                        }
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if pause {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    for r in receipts {
                        assert_eq!(
                            r.unwrap().wait_timeout(WAIT),
                            Some(syncpeer::Delivery::Written)
                        );
                    }
                })
            })
            .collect();
        raw.set_timeouts(WAIT);
        let mut decoder = FrameDecoder::new(small_frames().max_frame_size);
        let plans: Vec<_> = (0..THREADS).map(|i| plan(i, PER_THREAD)).collect();
        let mut opened = vec![vec![false; PER_THREAD as usize]; THREADS as usize];
        let mut left = THREADS * PER_THREAD;
        while left > 0 {
            let frame = raw.read_frame(&mut decoder).expect("a frame before EOF");
            let Some((thread, seq)) = opening_tag(&frame) else {
                continue;
            };
            let (plan, opened) = (&plans[thread as usize], &mut opened[thread as usize]);
            let streamed = |k: Kind| matches!(k, Kind::Streamed(_));
            assert_eq!(
                streamed(plan[seq as usize].0),
                matches!(frame, MultiplexMessage::Stream(_)),
                "{t:?}: {thread}/{seq} framed as planned"
            );
            for earlier in 0..seq as usize {
                let may_pass = !streamed(plan[seq as usize].0) && streamed(plan[earlier].0);
                assert!(
                    opened[earlier] || may_pass,
                    "{t:?}: thread {thread}: {seq} ({:?}) opened before {earlier} ({:?})",
                    plan[seq as usize].0,
                    plan[earlier].0
                );
            }
            assert!(!opened[seq as usize], "{t:?}: {thread}/{seq} twice");
            opened[seq as usize] = true;
            left -= 1;
        }
        within("senders", WAIT, move || {
            for s in senders {
                s.join().unwrap();
            }
        });
        assert_eq!(
            accepted.load(Ordering::Relaxed),
            u64::from(THREADS * PER_THREAD)
        );
        let m = h.metrics();
        assert!(m.direct_sends_accepted > 0 && m.rpc_requests_accepted > 0);
        let report = within("abort", WAIT, move || h.abort().unwrap());
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            report.messages_accepted
        );
        drop(raw);
    }
}

/// What an inline handler saw, and on which thread.
fn recording_handler() -> (Handler, Receiver<(String, Inbound)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let handler = Handler::inline(move |m| {
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        tx.send((thread, m)).unwrap();
    });
    (handler, rx)
}

/// A plain peer A, and a peer B whose direct sends go to a recording inline handler and whose
/// protocol `extra` goes to `handler`.
fn inline_pair(
    t: Transport,
    extra: ProtocolId,
    handler: Handler,
) -> (PeerHandle, PeerHandle, Receiver<(String, Inbound)>) {
    let (sa, sb) = sockets(t);
    let a = sa
        .builder()
        .remote_peer_id(PeerId::from_u64(2))
        .spawn()
        .unwrap();
    let (direct, seen) = recording_handler();
    let b = sb
        .builder()
        .remote_peer_id(PeerId::from_u64(1))
        .handler(DIRECT, direct)
        .handler(extra, handler)
        .spawn()
        .unwrap();
    (a, b, seen)
}

/// Inline handlers run on the connection's own threads: direct sends on the reader, requests
/// on the mux, where a request can be answered at once.
#[test]
fn inline_handlers_run_on_the_connection_threads() {
    for t in TRANSPORTS {
        let answered = Arc::new(AtomicU64::new(0));
        let count = answered.clone();
        let answer = Handler::inline(move |m| {
            if let Inbound::Request {
                data, responder, ..
            } = m
            {
                assert_eq!(std::thread::current().name(), Some("syncpeer-mux"));
                responder.respond(data).unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (a, b, seen) = inline_pair(t, RPC, answer);
        for i in 0..100 {
            a.send(DIRECT, numbered(i, 16)).unwrap();
        }
        for i in 0..100 {
            let (thread, m) = seen.recv_timeout(WAIT).expect("delivered inline");
            assert_eq!(thread, "syncpeer-reader", "{t:?}");
            assert_eq!(index_of(m.data()), i, "{t:?}: in order");
        }
        let reply = a.rpc(RPC, Bytes::from_static(b"echo"), WAIT).unwrap();
        assert_eq!(&reply[..], b"echo");
        assert_eq!(answered.load(Ordering::Relaxed), 1);
        assert_eq!(b.metrics().direct_sends_delivered, 100);
        let report = within("shutdown", WAIT, move || {
            a.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        assert!(report.is_clean(), "{t:?}: {report:?}");
        within("B's close", WAIT, move || b.join().unwrap());
    }
}

/// A panic inside an inline handler is caught and counted; the connection goes on.
#[test]
fn a_panicking_inline_handler_is_counted_and_the_connection_goes_on() {
    const FRAGILE: ProtocolId = ProtocolId(9);
    for t in TRANSPORTS {
        let fragile = Handler::inline(|m| {
            if m.data().is_empty() {
                panic!("empty payload");
            }
        });
        let (a, b, seen) = inline_pair(t, FRAGILE, fragile);
        a.send(FRAGILE, Bytes::new()).unwrap();
        a.send(DIRECT, numbered(7, 16)).unwrap();
        let (_, m) = seen.recv_timeout(WAIT).expect("the next message");
        assert_eq!(index_of(m.data()), 7);
        assert_eq!(b.metrics().dropped_handler_full, 1, "{t:?}");
        assert!(!b.is_closed());
        within("shutdown", WAIT, move || {
            a.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        let report = within("B's close", WAIT, move || b.join().unwrap());
        assert_eq!(report.reason, DisconnectReason::ConnectionClosed, "{t:?}");
    }
}

/// A response and then a direct send, made by one thread, reach the wire in that order. (They
/// once travelled on two channels, and the send overtook the response almost every time.)
#[test]
fn a_response_then_a_send_from_one_thread_keep_their_order() {
    use std::io::Write;
    use syncpeer::proto::{RequestId, RpcRequest};
    const TRIES: u64 = 300;
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (h, rx, _) = spawn_peer(socket, 9, PeerConfig::default(), &[(RPC, 16)]);
        raw.set_timeouts(WAIT);
        let mut decoder = FrameDecoder::new(PeerConfig::default().max_frame_size);
        for i in 0..TRIES {
            let request = RpcRequest {
                protocol_id: RPC,
                request_id: RequestId(i as u32),
                priority: 0,
                raw_request: numbered(i, 8),
            };
            let request = MultiplexMessage::Message(NetworkMessage::RpcRequest(request));
            raw.write_all(&frame(&request)).unwrap();
            let Ok(Inbound::Request { responder, .. }) = rx[0].recv_timeout(WAIT) else {
                panic!("{t:?}: request {i} not delivered");
            };
            responder.respond(numbered(i, 8)).unwrap();
            h.send(DIRECT, numbered(i, 8)).unwrap();
            let first = raw.read_frame(&mut decoder).expect("a frame");
            assert!(
                matches!(
                    first,
                    MultiplexMessage::Message(NetworkMessage::RpcResponse(_))
                ),
                "{t:?}, try {i}: {first:?} came before the response"
            );
            let second = raw.read_frame(&mut decoder).expect("a frame");
            assert!(
                matches!(
                    second,
                    MultiplexMessage::Message(NetworkMessage::DirectSendMsg(_))
                ),
                "{t:?}, try {i}: {second:?}"
            );
        }
        // The remote's EOF closes the connection; everything accepted was written before.
        raw.shutdown_write();
        let report = within("close", WAIT, move || h.join().unwrap());
        assert_eq!(report.messages_written, 2 * TRIES, "{t:?}");
        assert!(report.is_clean(), "{t:?}: {report:?}");
    }
}
