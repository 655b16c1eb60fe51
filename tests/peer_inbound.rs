//! The receiving side: messages for unknown protocols, full handler channels, the inbound RPC
//! limit, malformed frames written by hand (answered with `ParsingError`, connection kept) and
//! fatal framing errors (connection closed with `InputOutputError`).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use syncpeer::proto::{
    ErrorCode, FrameDecoder, MultiplexMessage, NetworkMessage, ProtocolId, RequestId, RpcRequest,
    StreamFragment, StreamId, StreamMessage,
};
use syncpeer::{Bytes, DisconnectReason, Inbound, PeerConfig, RpcError};

/// A protocol no test peer has a handler for.
const UNKNOWN: ProtocolId = ProtocolId(7);

#[test]
fn unknown_protocol_is_dropped_and_counted() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        a.handle
            .send(UNKNOWN, Bytes::from_static(b"nobody"))
            .unwrap();
        let lost = a
            .handle
            .rpc_start(
                UNKNOWN,
                Bytes::from_static(b"nobody?"),
                Duration::from_millis(300),
            )
            .unwrap();
        a.handle
            .send(DIRECT, Bytes::from_static(b"marker"))
            .unwrap();
        // Direct sends are dispatched in wire order by the reader.
        assert_eq!(recv(&b).data(), &Bytes::from_static(b"marker"), "{t:?}");
        // RPC requests are handled in wire order by the mux: when the next request arrives,
        // the one for the unknown protocol was dropped.
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"known"), WAIT));
        match recv(&b) {
            Inbound::Request {
                data, responder, ..
            } => {
                assert_eq!(&data[..], b"known");
                assert_eq!(b.handle.metrics().dropped_unknown_protocol, 2, "{t:?}");
                responder.respond(Bytes::from_static(b"yes")).unwrap();
            }
            other => panic!("{t:?}: unexpected {other:?}"),
        }
        let result = within("rpc", WAIT, move || caller.join().unwrap());
        assert_eq!(result.as_deref(), Ok(&b"yes"[..]));
        // No answer, and no error frame, for the unknown protocol: the caller times out.
        assert_eq!(
            lost.wait_timeout(WAIT).err().map(|e| e.err()),
            Some(Some(RpcError::TimedOut))
        );
        assert_eq!(a.handle.metrics().remote_errors, 0);
        assert!(!b.handle.is_closed());
        assert!(b.disconnected.try_recv().is_err());
    }
}

#[test]
fn full_handler_drops_and_counts_and_the_peer_goes_on() {
    const CAPACITY: usize = 4;
    const SENT: usize = 20;
    for t in TRANSPORTS {
        let (a_sock, b_sock) = sockets(t);
        let a = spawn_side(a_sock, 1, 2, PeerConfig::default(), 64);
        // B: a small channel for direct sends, a roomy one for requests.
        let (bh, rx, _bd) = spawn_peer(
            b_sock,
            1,
            PeerConfig::default(),
            &[(DIRECT, CAPACITY), (RPC, 64)],
        );
        let (direct, requests) = (&rx[0], &rx[1]);
        for i in 0..SENT {
            a.handle.send(DIRECT, numbered(i as u64, 8)).unwrap();
        }
        // The reader handles frames in wire order: when this request reaches the mux, every
        // direct send before it was delivered or dropped.
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"sync"), WAIT));
        let Inbound::Request { responder, .. } = requests.recv_timeout(WAIT).unwrap() else {
            panic!("expected a request")
        };
        let m = bh.metrics();
        assert_eq!(m.dropped_handler_full, (SENT - CAPACITY) as u64, "{t:?}");
        assert_eq!(m.direct_sends_delivered, CAPACITY as u64);
        responder.respond(Bytes::new()).unwrap();
        within("rpc", WAIT, move || caller.join().unwrap()).unwrap();
        // The first ones were kept, in order.
        for i in 0..CAPACITY {
            let got = direct.recv_timeout(WAIT).unwrap();
            assert_eq!(index_of(got.data()), i as u64);
        }
        // The peer goes on once there is room.
        a.handle.send(DIRECT, numbered(99, 8)).unwrap();
        assert_eq!(index_of(direct.recv_timeout(WAIT).unwrap().data()), 99);
        assert!(!bh.is_closed());
    }
}

#[test]
fn inbound_rpcs_over_the_limit_are_dropped_and_counted() {
    const LIMIT: usize = 4;
    const FLOOD: usize = 10;
    let server_config = PeerConfig {
        max_concurrent_inbound_rpcs: LIMIT,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a_sock, b_sock) = sockets(t);
        let a = spawn_side(a_sock, 1, 2, PeerConfig::default(), 64);
        let b = spawn_side(b_sock, 2, 1, server_config.clone(), 64);
        // The first LIMIT will be answered: they may wait as long as it takes. The others are
        // dropped by the server: they will time out, soon.
        let pending: Vec<_> = (0..FLOOD)
            .map(|i| {
                let timeout = if i < LIMIT {
                    WAIT
                } else {
                    Duration::from_millis(500)
                };
                a.handle
                    .rpc_start(RPC, numbered(i as u64, 8), timeout)
                    .unwrap()
            })
            .collect();
        // The first LIMIT are handed over and held unanswered.
        let held: Vec<_> = (0..LIMIT)
            .map(|i| match recv(&b) {
                Inbound::Request {
                    data, responder, ..
                } => {
                    assert_eq!(index_of(&data), i as u64);
                    responder
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        // Counters have no channel to wait on.
        eventually("inbound rpc limit drops", || {
            b.handle.metrics().dropped_inbound_rpc_limit == (FLOOD - LIMIT) as u64
        });
        assert!(
            b.inbound.try_recv().is_err(),
            "{t:?}: a request over the limit was delivered"
        );
        for r in held {
            r.respond(Bytes::from_static(b"held")).unwrap();
        }
        for (i, p) in pending.into_iter().enumerate() {
            let outcome = p.wait_timeout(WAIT);
            if i < LIMIT {
                assert_eq!(outcome.ok().as_deref(), Some(&b"held"[..]), "{t:?} rpc {i}");
            } else {
                assert_eq!(
                    outcome.err().map(|e| e.err()),
                    Some(Some(RpcError::TimedOut))
                );
            }
        }
        // Slots are free again.
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"again"), WAIT));
        let Inbound::Request { responder, .. } = recv(&b) else {
            panic!("expected a request")
        };
        responder.respond(Bytes::from_static(b"ok")).unwrap();
        assert_eq!(
            within("rpc", WAIT, move || caller.join().unwrap()).as_deref(),
            Ok(&b"ok"[..])
        );
        assert_eq!(
            b.handle.metrics().dropped_inbound_rpc_limit,
            (FLOOD - LIMIT) as u64
        );
    }
}

#[test]
fn malformed_frames_get_parsing_errors_and_the_connection_stays_up() {
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        raw.set_timeouts(WAIT);
        let (h, rx, notices) = spawn_peer(socket, 5, PeerConfig::default(), &[(DIRECT, 64)]);
        let inbound = &rx[0];

        let mut bytes = Vec::new();
        // A NetworkMessage variant that does not exist.
        bytes.extend_from_slice(&[0, 0, 0, 3, 0x00, 0x07, 0xff]);
        // A valid direct send with a trailing byte.
        let mut trailing = direct_frame(DIRECT, b"hi");
        trailing.push(0x55);
        let len = (trailing.len() - 4) as u32;
        trailing[..4].copy_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&trailing);
        // An empty frame.
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        // A MultiplexMessage variant that does not exist, then a length claiming more bytes
        // than the frame has.
        bytes.extend_from_slice(&[0, 0, 0, 1, 0x05]);
        bytes.extend_from_slice(&[0, 0, 0, 5, 0x00, 0x03, 0x02, 0x00, 0x7f]);
        // A stream fragment with no stream: refused by the reassembler, no reply.
        bytes.extend_from_slice(&frame(&MultiplexMessage::Stream(StreamMessage::Fragment(
            StreamFragment {
                request_id: StreamId(3),
                fragment_id: 1,
                raw_data: Bytes::from_static(b"orphan"),
            },
        ))));
        // Then valid traffic.
        bytes.extend_from_slice(&direct_frame(DIRECT, b"still here"));
        bytes.extend_from_slice(&frame(&MultiplexMessage::Message(
            NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: DIRECT,
                request_id: RequestId(77),
                priority: 0,
                raw_request: Bytes::from_static(b"ping"),
            }),
        )));
        raw.write_all(&bytes).unwrap();

        assert_eq!(
            inbound.recv_timeout(WAIT).unwrap().data(),
            &Bytes::from_static(b"still here")
        );
        match inbound.recv_timeout(WAIT).unwrap() {
            Inbound::Request {
                data, responder, ..
            } => {
                assert_eq!(&data[..], b"ping");
                responder.respond(Bytes::from_static(b"pong")).unwrap();
            }
            other => panic!("{t:?}: unexpected {other:?}"),
        }

        let mut decoder = FrameDecoder::new(PeerConfig::default().max_frame_size);
        let expected = [(0x00, 0x07), (0x00, 0x03), (0, 0), (0x05, 0), (0x00, 0x03)];
        for (message, protocol) in expected {
            match raw.read_frame(&mut decoder) {
                Some(MultiplexMessage::Message(NetworkMessage::Error(e))) => {
                    assert_eq!(e, ErrorCode::ParsingError { message, protocol }, "{t:?}")
                }
                other => panic!("{t:?}: expected a parsing error, got {other:?}"),
            }
        }
        match raw.read_frame(&mut decoder) {
            Some(MultiplexMessage::Message(NetworkMessage::RpcResponse(r))) => {
                assert_eq!(r.request_id, RequestId(77));
                assert_eq!(&r.raw_response[..], b"pong");
            }
            other => panic!("{t:?}: expected the response, got {other:?}"),
        }
        let m = h.metrics();
        assert_eq!((m.malformed_frames, m.stream_errors), (5, 1), "{t:?}");
        assert!(!h.is_closed());

        // A clean close from the raw side: EOF at a frame boundary.
        raw.shutdown_write();
        let notice = one_notice(&notices);
        assert_eq!(notice.reason, DisconnectReason::ConnectionClosed);
        assert_eq!(
            raw.read_frame(&mut decoder),
            None,
            "EOF after the peer's last frame"
        );
    }
}

#[test]
fn length_prefix_over_max_frame_size_closes_with_io_error() {
    let config = PeerConfig {
        max_frame_size: 64 * 1024,
        max_message_size: 1 << 20,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (h, rx, notices) = spawn_peer(socket, 5, config.clone(), &[(DIRECT, 64)]);
        let mut bytes = direct_frame(DIRECT, b"first");
        bytes.extend_from_slice(&(64 * 1024 + 1u32).to_be_bytes());
        bytes.extend_from_slice(&[0; 16]);
        raw.write_all(&bytes).unwrap();
        assert_eq!(
            rx[0].recv_timeout(WAIT).unwrap().data(),
            &Bytes::from_static(b"first")
        );
        let notice = one_notice(&notices);
        assert_eq!(notice.reason, DisconnectReason::InputOutputError, "{t:?}");
        assert!(h.is_closed());
        assert!(
            raw.read_to_eof().is_empty(),
            "nothing is sent, the socket is half-closed"
        );
        assert_eq!(h.join().unwrap(), notice.report);
    }
}

#[test]
fn eof_inside_a_frame_closes_with_io_error() {
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (_h, _rx, notices) = spawn_peer(socket, 5, PeerConfig::default(), &[(DIRECT, 64)]);
        let whole = direct_frame(DIRECT, b"cut short");
        raw.write_all(&whole[..whole.len() / 2]).unwrap();
        raw.shutdown_write();
        assert_eq!(
            one_notice(&notices).reason,
            DisconnectReason::InputOutputError,
            "{t:?}"
        );
    }
}

#[test]
fn expired_inbound_rpcs_free_their_slots() {
    let inbound_rpc_timeout = Duration::from_millis(200);
    let server_config = PeerConfig {
        max_concurrent_inbound_rpcs: 1,
        inbound_rpc_timeout,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a_sock, b_sock) = sockets(t);
        let a = spawn_side(a_sock, 1, 2, PeerConfig::default(), 64);
        let b = spawn_side(b_sock, 2, 1, server_config.clone(), 64);
        let first = a
            .handle
            .rpc_start(RPC, numbered(1, 8), inbound_rpc_timeout)
            .unwrap();
        // Held, never answered: it occupies the only slot until it expires.
        let Inbound::Request {
            data,
            responder: held,
            ..
        } = recv(&b)
        else {
            panic!("expected a request")
        };
        assert_eq!(index_of(&data), 1);
        assert_eq!(
            first.wait_timeout(WAIT).err().map(|e| e.err()),
            Some(Some(RpcError::TimedOut))
        );
        // A window: let the server's deadline for the held request pass (and its mux, which
        // wakes at that deadline, expire it) before the next request arrives.
        let expired = held.deadline() + Duration::from_millis(100);
        std::thread::sleep(expired.saturating_duration_since(std::time::Instant::now()));
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, numbered(2, 8), WAIT));
        match recv(&b) {
            Inbound::Request {
                data, responder, ..
            } => {
                assert_eq!(index_of(&data), 2, "{t:?}");
                responder.respond(Bytes::from_static(b"second")).unwrap();
            }
            other => panic!("{t:?}: unexpected {other:?}"),
        }
        let result = within("rpc", WAIT, move || caller.join().unwrap());
        assert_eq!(result.as_deref(), Ok(&b"second"[..]));
        assert_eq!(b.handle.metrics().dropped_inbound_rpc_limit, 0, "{t:?}");
        drop(held);
    }
}
