//! Hostile input against a live peer, from a raw socket (`common::Raw`, which seals what it
//! writes when the suites run over Noise, so the same frames arrive inside Noise messages):
//! each case sends crafted bytes
//! (frames built with `syncpeer::proto::codec::encode_frame`, or by hand where the encoder
//! refuses to produce them) and checks the counted outcome, whether the connection is kept or
//! closed as the original would, that memory stays bounded, that no peer thread panics, and
//! that a close against a remote that never reads or never stops sending still ends within
//! `linger` plus a margin. `docs/hostile-input.md` is this table in prose.

mod common;
mod harness;

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{DIRECT, RPC, Raw, Side, WAIT, spawn_side};
use syncpeer::proto::codec::encode_frame;
use syncpeer::proto::{
    DirectSendMsg, ErrorCode, FrameDecoder, MultiplexMessage, NetworkMessage, RequestId,
    RpcRequest, RpcResponse, StreamFragment, StreamHeader, StreamId, StreamMessage,
};
use syncpeer::{Bytes, DisconnectReason, Inbound, PeerConfig, PeerMetrics, ProtocolId};

const MAX_FRAME: usize = 4096;
const INBOUND_LIMIT: usize = 4;
const LINGER: Duration = Duration::from_secs(1);
/// How much later than `linger` a close against a hostile remote may end.
const MARGIN: Duration = Duration::from_secs(3);

fn config() -> PeerConfig {
    PeerConfig {
        max_frame_size: MAX_FRAME,
        max_message_size: 64 * 1024,
        max_concurrent_inbound_rpcs: INBOUND_LIMIT,
        linger: LINGER,
        ..PeerConfig::default()
    }
}

/// The test's end of the connection: a blocking raw end with a short read timeout.
struct Hostile {
    raw: Raw,
    decoder: FrameDecoder,
}

impl Hostile {
    fn send(&mut self, bytes: &[u8]) {
        self.raw.write_all(bytes).expect("write to the peer");
    }

    /// The next frame the peer sends, or `None` if nothing comes within `within`.
    fn frame(&mut self, within: Duration) -> Option<MultiplexMessage> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(m) = self.decoder.decode().expect("the peer sends valid frames") {
                return Some(m);
            }
            if Instant::now() >= deadline {
                return None;
            }
            match self.raw.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.extend(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads until the peer closes (EOF or reset), failing after WAIT.
    #[track_caller]
    fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "the peer did not close");
            match self.raw.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A live peer (id 1, its remote is id 2) and a raw end connected to it.
fn hostile(capacity: usize) -> (Side, Hostile) {
    let (theirs, raw) = common::raw_pair(common::Transport::Tcp);
    raw.set_read_timeout(Duration::from_millis(20));
    let side = spawn_side(theirs, 1, 2, config(), capacity);
    let raw = Hostile {
        raw,
        decoder: FrameDecoder::new(1 << 20),
    };
    (side, raw)
}

/// A frame around `body`, length prefix and all, with no checks (to craft bad ones).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn encoded(m: &MultiplexMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(m, usize::MAX, &mut out).expect("encode");
    out.to_vec()
}

fn direct(data: &[u8]) -> NetworkMessage {
    NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: DIRECT,
        priority: 0,
        raw_msg: Bytes::copy_from_slice(data),
    })
}

fn header(id: u32, num_fragments: u8, message: NetworkMessage) -> Vec<u8> {
    encoded(&MultiplexMessage::Stream(StreamMessage::Header(
        StreamHeader {
            request_id: StreamId(id),
            num_fragments,
            message,
        },
    )))
}

fn fragment(id: u32, fragment_id: u8, data: &[u8]) -> Vec<u8> {
    encoded(&MultiplexMessage::Stream(StreamMessage::Fragment(
        StreamFragment {
            request_id: StreamId(id),
            fragment_id,
            raw_data: Bytes::copy_from_slice(data),
        },
    )))
}

fn request(id: u32, data: &[u8]) -> Vec<u8> {
    encoded(&MultiplexMessage::Message(NetworkMessage::RpcRequest(
        RpcRequest {
            protocol_id: RPC,
            request_id: RequestId(id),
            priority: 0,
            raw_request: Bytes::copy_from_slice(data),
        },
    )))
}

/// A case where the connection must survive.
struct Kept {
    name: &'static str,
    input: Vec<u8>,
    /// The `ParsingError` bytes the peer must answer with, if any.
    reply: Option<(u8, u8)>,
    /// The counter that must have moved, and by how much.
    counter: fn(&PeerMetrics) -> u64,
    count: u64,
    /// Payloads that must still be delivered (from a valid stream among the input).
    delivered: Vec<Vec<u8>>,
    /// Messages received and not delivered (`receive_drops().total()`).
    lost: u64,
}

fn kept_cases() -> Vec<Kept> {
    let malformed = |m: &PeerMetrics| m.malformed_frames;
    let stream = |m: &PeerMetrics| m.stream_errors;
    let part = |i: u8| vec![i; 10];
    let whole = |parts: &[u8]| parts.iter().flat_map(|i| part(*i)).collect::<Vec<u8>>();
    let valid = encoded(&MultiplexMessage::Message(direct(b"valid")));
    let mut trailing = valid[4..].to_vec();
    trailing.push(0);
    vec![
        Kept {
            name: "garbage bytes inside a well-formed length",
            input: frame(&[0xff, 0xee, 0xdd, 0xcc, 0xbb]),
            reply: Some((0xff, 0xee)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "an empty frame",
            input: frame(&[]),
            reply: Some((0, 0)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "unknown MultiplexMessage variant",
            input: frame(&[0x02]),
            reply: Some((0x02, 0)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "unknown NetworkMessage variant",
            input: frame(&[0x00, 0x04, 0x01]),
            reply: Some((0x00, 0x04)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "non-canonical ULEB128 protocol id (0x82 0x00 for 2)",
            input: frame(&[0x00, 0x03, 0x82, 0x00, 0x00, 0x01, 0x41]),
            reply: Some((0x00, 0x03)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "non-canonical ULEB128 length (0x81 0x00 for 1)",
            input: frame(&[0x00, 0x03, 0x02, 0x00, 0x81, 0x00, 0x41]),
            reply: Some((0x00, 0x03)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "trailing bytes after a valid message",
            input: frame(&trailing),
            reply: Some((0x00, 0x03)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "a byte string longer than its frame",
            input: frame(&[0x00, 0x03, 0x02, 0x00, 0x7f, 0x41]),
            reply: Some((0x00, 0x03)),
            counter: malformed,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "stream header announcing too many fragments (17 > 64 KiB / 4 KiB)",
            input: header(1, 17, direct(&part(0))),
            reply: None,
            counter: stream,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "stream header announcing no fragments",
            input: header(1, 0, direct(&part(0))),
            reply: None,
            counter: stream,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "a streamed Error message",
            input: header(
                1,
                1,
                NetworkMessage::Error(ErrorCode::ParsingError {
                    message: 0,
                    protocol: 0,
                }),
            ),
            reply: None,
            counter: stream,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
        Kept {
            name: "fragments out of order, duplicated, with a wrong id, id 0, and past the end",
            input: [
                fragment(5, 1, &part(9)), // no stream yet
                header(5, 2, direct(&part(0))),
                fragment(5, 2, &part(9)), // out of order
                fragment(6, 1, &part(9)), // wrong stream id
                fragment(5, 0, &part(9)), // id 0
                fragment(5, 1, &part(1)),
                fragment(5, 1, &part(9)), // duplicate
                fragment(5, 2, &part(2)), // completes the stream
                fragment(5, 3, &part(9)), // past the end
            ]
            .concat(),
            reply: None,
            counter: stream,
            count: 6,
            delivered: vec![whole(&[0, 1, 2])],
            lost: 0,
        },
        Kept {
            name: "a new header mid-stream replaces the old stream",
            input: [
                header(1, 2, direct(&part(0))),
                fragment(1, 1, &part(1)),
                header(2, 1, direct(&part(5))),
                fragment(1, 2, &part(9)), // the old stream is gone
                fragment(2, 1, &part(6)),
            ]
            .concat(),
            reply: None,
            counter: stream,
            count: 2,
            delivered: vec![whole(&[5, 6])],
            lost: 1,
        },
        Kept {
            name: "a response for an unknown request id",
            input: encoded(&MultiplexMessage::Message(NetworkMessage::RpcResponse(
                RpcResponse {
                    request_id: RequestId(999),
                    priority: 0,
                    raw_response: Bytes::from_static(b"?"),
                },
            ))),
            reply: None,
            counter: |m| m.unknown_responses,
            count: 1,
            delivered: vec![],
            lost: 0,
        },
        Kept {
            name: "a direct send for a protocol with no handler",
            input: encoded(&MultiplexMessage::Message(NetworkMessage::DirectSendMsg(
                DirectSendMsg {
                    protocol_id: ProtocolId(77),
                    priority: 0,
                    raw_msg: Bytes::from_static(b"?"),
                },
            ))),
            reply: None,
            counter: |m| m.dropped_unknown_protocol,
            count: 1,
            delivered: vec![],
            lost: 1,
        },
    ]
}

#[test]
fn malformed_and_misbehaving_input_is_counted_and_the_connection_kept() {
    for case in kept_cases() {
        harness::isolated(|| {
            let (side, mut raw) = hostile(64);
            let rss = harness::rss_kib();
            raw.send(&case.input);
            if let Some((message, protocol)) = case.reply {
                let expected =
                    MultiplexMessage::Message(NetworkMessage::Error(ErrorCode::ParsingError {
                        message,
                        protocol,
                    }));
                assert_eq!(raw.frame(WAIT), Some(expected), "{}", case.name);
            }
            for payload in &case.delivered {
                let got = side.inbound.recv_timeout(WAIT).expect(case.name);
                assert_eq!(&got.data()[..], &payload[..], "{}", case.name);
            }
            // Still up: a valid message after the bad input is delivered.
            raw.send(&encoded(&MultiplexMessage::Message(direct(b"after"))));
            let got = side.inbound.recv_timeout(WAIT).expect(case.name);
            assert_eq!(&got.data()[..], b"after", "{}: connection kept", case.name);
            // RPC traffic is counted by the mux, a moment after the reader has moved on; the
            // reader counts deliveries once per read, after handing them over.
            let delivered = case.delivered.len() as u64 + 1;
            harness::wait_until(case.name, WAIT, || {
                let m = side.handle.metrics();
                (case.counter)(&m) >= case.count && m.direct_sends_delivered >= delivered
            });
            let m = side.handle.metrics();
            assert_eq!((case.counter)(&m), case.count, "{}: {m:?}", case.name);
            // Every message received, the valid one after included, is accounted for once.
            assert_eq!(m.receive_drops().total(), case.lost, "{}: {m:?}", case.name);
            assert_eq!(m.direct_sends_delivered, delivered, "{}: {m:?}", case.name);
            assert!(!side.handle.is_closed(), "{}", case.name);
            assert!(
                harness::rss_kib() < rss + 32 * 1024,
                "{}: memory grew",
                case.name
            );
            // The remote closes; nothing else was said to it beyond the expected reply.
            raw.raw.shutdown_write();
            let notice = side.disconnected.recv_timeout(WAIT).expect(case.name);
            assert_eq!(
                notice.reason,
                DisconnectReason::ConnectionClosed,
                "{}",
                case.name
            );
            assert!(notice.report.is_clean(), "{}", case.name);
            assert_eq!(raw.frame(WAIT), None, "{}: unexpected frame", case.name);
            assert_eq!(side.handle.join().unwrap(), notice.report);
        });
    }
}

/// Cases where the original closes the connection with `InputOutputError`.
fn closing_cases() -> Vec<(&'static str, Vec<u8>)> {
    let valid = encoded(&MultiplexMessage::Message(direct(b"valid")));
    vec![
        (
            "a length prefix over max_frame_size",
            (MAX_FRAME as u32 + 1).to_be_bytes().to_vec(),
        ),
        ("a 4 GiB length prefix", vec![0xff; 4]),
        (
            "garbage bytes with no framing",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "a truncated frame, then EOF",
            valid[..valid.len() - 3].to_vec(),
        ),
        ("a truncated length prefix, then EOF", vec![0, 0]),
    ]
}

#[test]
fn framing_errors_close_with_an_io_error() {
    for (name, input) in closing_cases() {
        harness::isolated(|| {
            let (side, mut raw) = hostile(64);
            let rss = harness::rss_kib();
            raw.send(&input);
            // The peer stops at the bad prefix; for a truncated frame it waits for more.
            raw.raw.shutdown_write();
            let notice = side.disconnected.recv_timeout(WAIT).expect(name);
            assert_eq!(notice.reason, DisconnectReason::InputOutputError, "{name}");
            assert_eq!(side.handle.join().unwrap(), notice.report, "{name}");
            raw.expect_closed();
            let m = side.handle.metrics();
            assert_eq!(m.frames_in + m.malformed_frames, 0, "{name}: {m:?}");
            assert!(harness::rss_kib() < rss + 32 * 1024, "{name}: memory grew");
        });
    }
}

#[test]
fn eof_at_a_frame_boundary_is_a_clean_close() {
    harness::isolated(|| {
        let (side, mut raw) = hostile(64);
        raw.send(&encoded(&MultiplexMessage::Message(direct(b"last"))));
        raw.raw.shutdown_write();
        assert_eq!(
            &side.inbound.recv_timeout(WAIT).unwrap().data()[..],
            b"last"
        );
        let notice = side.disconnected.recv_timeout(WAIT).unwrap();
        assert_eq!(notice.reason, DisconnectReason::ConnectionClosed);
        raw.expect_closed();
    });
}

#[test]
fn a_flood_of_requests_past_the_limit_is_dropped_and_counted() {
    harness::isolated(|| {
        let (side, mut raw) = hostile(64);
        let flood = 20;
        let input: Vec<u8> = (0..flood).flat_map(|i| request(i, &[i as u8])).collect();
        raw.send(&input);
        // The handler holds the admitted requests without answering.
        let held: Vec<_> = (0..INBOUND_LIMIT)
            .map(|_| match side.inbound.recv_timeout(WAIT).unwrap() {
                Inbound::Request {
                    data, responder, ..
                } => (data, responder),
                other => panic!("{other:?}"),
            })
            .collect();
        harness::wait_until("the flood to be handled", WAIT, || {
            let m = side.handle.metrics();
            m.requests_delivered + m.dropped_inbound_rpc_limit >= u64::from(flood)
        });
        let m = side.handle.metrics();
        assert_eq!(m.requests_delivered, INBOUND_LIMIT as u64);
        assert_eq!(
            m.dropped_inbound_rpc_limit,
            u64::from(flood) - INBOUND_LIMIT as u64
        );
        assert!(side.inbound.is_empty());
        // Answering frees the slots: the answers carry the admitted requests' ids.
        for (data, responder) in held {
            responder.respond(data.clone()).unwrap();
            let Some(MultiplexMessage::Message(NetworkMessage::RpcResponse(r))) = raw.frame(WAIT)
            else {
                panic!("expected a response")
            };
            assert_eq!(r.request_id.0, u32::from(data[0]));
            assert_eq!(r.raw_response, data);
        }
        raw.send(&request(100, b"again"));
        assert!(matches!(
            side.inbound.recv_timeout(WAIT).unwrap(),
            Inbound::Request { .. }
        ));
        side.handle.abort().unwrap();
    });
}

#[test]
fn shutdown_against_a_remote_that_never_reads_ends_within_linger() {
    harness::isolated(|| {
        let (side, raw) = hostile(64);
        let chunk = Bytes::from(vec![1u8; 60 * 1024]);
        // Far more than the socket buffers hold; the remote reads nothing.
        let mut receipts = Vec::new();
        for _ in 0..1000 {
            match side.handle.try_send(DIRECT, chunk.clone()) {
                Ok(()) => {}
                Err(syncpeer::TrySendError::Full(_)) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        receipts.push(side.handle.send_with_receipt(DIRECT, chunk).unwrap());
        let started = Instant::now();
        let report = side
            .handle
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();
        assert!(started.elapsed() < LINGER + MARGIN, "{report:?}");
        assert_eq!(report.reason, DisconnectReason::RequestedByPeerManager);
        assert!(report.messages_abandoned > 0, "{report:?}");
        assert_eq!(
            report.messages_accepted,
            report.messages_written + report.messages_abandoned
        );
        assert_eq!(
            receipts[0].wait_timeout(WAIT),
            Some(syncpeer::Delivery::Abandoned)
        );
        drop(raw);
    });
}

#[test]
fn shutdown_against_a_remote_that_sends_forever_ends_within_linger() {
    harness::isolated(|| {
        let (side, raw) = hostile(1 << 16);
        let stop = Arc::new(AtomicBool::new(false));
        let mut raw = raw;
        let flag = stop.clone();
        // The writing thread owns the raw end, and drops it when done.
        let writer = harness::spawn_bounded("forever", move || {
            let frame = encoded(&MultiplexMessage::Message(direct(&[3; 200])));
            let batch = frame.repeat(64);
            let cap = Instant::now() + WAIT;
            // Until told, or the peer's socket refuses (it closed), or the cap.
            while !flag.load(Ordering::Relaxed) && Instant::now() < cap {
                if raw.raw.write_all(&batch).is_err() {
                    break;
                }
            }
        });
        harness::wait_until("traffic to flow", WAIT, || {
            side.handle.metrics().direct_sends_delivered > 1000
        });
        let started = Instant::now();
        let report = side
            .handle
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();
        let took = started.elapsed();
        assert!(took < LINGER + MARGIN, "took {took:?}");
        assert!(
            took >= LINGER,
            "the peer reads until the deadline: {took:?}"
        );
        assert_eq!(report.reason, DisconnectReason::RequestedByPeerManager);
        assert!(report.delivered_during_drain > 0, "{report:?}");
        assert!(report.is_clean());
        stop.store(true, Ordering::Relaxed);
        writer.join(WAIT);
    });
}

#[test]
fn rpc_traffic_after_the_close_is_counted_not_lost() {
    harness::isolated(|| {
        let (side, mut raw) = hostile(64);
        let h = side.handle.clone();
        let closing = harness::spawn_bounded("shutdown", move || {
            h.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        // The peer has drained (nothing to send) and half-closed: its mux no longer handles
        // RPC traffic, but its reader reads until our EOF.
        raw.expect_closed();
        let n = 10;
        let mut input: Vec<u8> = (0..n).flat_map(|i| request(i, b"late")).collect();
        input.extend(encoded(&MultiplexMessage::Message(
            NetworkMessage::RpcResponse(RpcResponse {
                request_id: RequestId(7),
                priority: 0,
                raw_response: Bytes::from_static(b"late"),
            }),
        )));
        raw.send(&input);
        raw.raw.shutdown_write();
        let report = closing.join(WAIT);
        assert!(
            report.drain_duration < LINGER,
            "the reader saw our EOF: {report:?}"
        );
        let m = side.handle.metrics();
        assert_eq!(m.frames_in, u64::from(n) + 1);
        assert_eq!(
            (
                m.dropped_at_close,
                m.dropped_handler_full,
                m.unknown_responses,
                m.requests_delivered
            ),
            (u64::from(n), 0, 1, 0),
            "{m:?}"
        );
    });
}

#[test]
fn a_stream_cut_by_eof_is_discarded_with_a_clean_close() {
    harness::isolated(|| {
        let (side, mut raw) = hostile(64);
        let input = [header(3, 2, direct(&[1; 10])), fragment(3, 1, &[2; 10])].concat();
        raw.send(&input);
        raw.raw.shutdown_write();
        let notice = side.disconnected.recv_timeout(WAIT).unwrap();
        // EOF at a frame boundary: a clean close. The unfinished stream is dropped; nothing
        // counts it (the sender, not the receiver, knows it was never finished).
        assert_eq!(notice.reason, DisconnectReason::ConnectionClosed);
        let m = side.handle.metrics();
        assert_eq!(
            (m.frames_in, m.stream_errors, m.direct_sends_delivered),
            (2, 0, 0)
        );
        assert!(side.inbound.is_empty());
        raw.expect_closed();
    });
}
