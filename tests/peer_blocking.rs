//! [`Handler::blocking`]: what pushes back and how the connection stays usable meanwhile.
//!
//! - A blocking handler keeps the order of the messages of every protocol it serves.
//! - While it is full, RPC responses already read still reach their callers, and those behind
//!   more than the reader's bound wait for room (documented, checked).
//! - Requests for a full blocking handler wait in the mux, in order, while it goes on; one
//!   held past its deadline is dropped and counted.
//! - A reader waiting for room stops on `abort` (also during a graceful close, whose deadline
//!   is far), at the drain deadline of `shutdown`, and when the handler's receiver goes away.
//!
//! The flood that checks nothing is lost end to end is in `peer_receive.rs`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Receiver;
use syncpeer::{
    Bytes, DisconnectReason, Handler, Inbound, PeerConfig, PeerHandle, PeerId, ProtocolId, RpcError,
};

/// A second direct-send protocol.
const DIRECT2: ProtocolId = ProtocolId(3);

#[test]
fn a_blocking_handler_keeps_the_order_of_the_protocols_sharing_its_channel() {
    const N: u64 = 3000;
    for t in TRANSPORTS {
        let (sa, sb) = sockets(t);
        let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
        let (tx, rx) = crossbeam_channel::bounded(2);
        let (ntx, notices) = crossbeam_channel::unbounded();
        let b = sb
            .builder()
            .remote_peer_id(PeerId::from_u64(1))
            .handler(DIRECT, Handler::blocking(tx.clone()))
            .handler(DIRECT2, Handler::blocking(tx))
            .on_disconnect(ntx)
            .spawn()
            .unwrap();
        let h = a.handle.clone();
        let sender = thread::spawn(move || {
            for i in 0..N {
                let protocol = if i.is_multiple_of(3) { DIRECT2 } else { DIRECT };
                h.send(protocol, numbered(i, 100)).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < N as usize {
            let m = rx.recv_timeout(WAIT).expect("the next message in time");
            let i = index_of(m.data());
            let expected = if i.is_multiple_of(3) { DIRECT2 } else { DIRECT };
            assert_eq!(m.protocol(), expected, "{t:?}");
            got.push(i);
            if got.len().is_multiple_of(100) {
                thread::sleep(Duration::from_millis(2));
            }
        }
        within("sender", WAIT, move || sender.join().unwrap());
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "{t:?}: every one, in order"
        );
        let ra = a
            .handle
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();
        let rb = notices.recv_timeout(WAIT).unwrap().report;
        assert_accounted(&format!("{t:?}"), &ra, &rb);
        assert!(rb.receive_drops.is_empty(), "{t:?}: {rb:?}");
        assert!(rb.is_lossless(), "{t:?}: {rb:?}");
        drop(b);
    }
}

/// B with a blocking handler of one slot for `DIRECT`, which nobody reads yet; A answers B's
/// requests from its own channel.
struct Stalled {
    a: Side,
    b: PeerHandle,
    direct: Receiver<Inbound>,
}

fn stalled(t: Transport, b_config: PeerConfig) -> Stalled {
    let (sa, sb) = sockets(t);
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
    let (tx, direct) = crossbeam_channel::bounded(1);
    let (dtx, _) = crossbeam_channel::unbounded();
    let b = sb
        .builder()
        .config(b_config)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(DIRECT, Handler::blocking(tx))
        .on_disconnect(dtx)
        .spawn()
        .unwrap();
    Stalled { a, b, direct }
}

/// A takes B's request, sends `count` direct sends of `size` bytes ahead of its answer, then
/// answers: the answer is behind them in the socket.
fn answer_behind(s: &Stalled, count: u64, size: usize) -> syncpeer::PendingRpc {
    let call = s.b.rpc_start(RPC, Bytes::from_static(b"q"), WAIT).unwrap();
    let Inbound::Request { responder, .. } = recv(&s.a) else {
        panic!("expected B's request")
    };
    for i in 0..count {
        s.a.handle.send(DIRECT, numbered(i, size)).unwrap();
    }
    responder.respond(Bytes::from_static(b"a")).unwrap();
    call
}

#[test]
fn rpc_responses_already_read_get_through_while_a_blocking_handler_is_full() {
    const COUNT: u64 = 20;
    for t in TRANSPORTS {
        let s = stalled(t, PeerConfig::default());
        let call = answer_behind(&s, COUNT, 64);
        // The channel holds one; the reader holds the rest, and still hands the response to
        // its caller.
        assert_eq!(outcome(call), Ok(Bytes::from_static(b"a")), "{t:?}");
        // (The reader counts deliveries once per read, after handing them over.)
        eventually("the first delivered", || {
            s.b.metrics().direct_sends_delivered >= 1
        });
        assert_eq!(s.b.metrics().direct_sends_delivered, 1, "{t:?}");
        // Then every message, in order, as room appears.
        for i in 0..COUNT {
            let m = s.direct.recv_timeout(WAIT).expect("held message in time");
            assert_eq!(index_of(m.data()), i, "{t:?}");
        }
        eventually("all delivered", || {
            s.b.metrics().direct_sends_delivered == COUNT
        });
    }
}

/// The reader holds a little for a full blocking handler and the socket has gone quiet; a
/// response that arrives then still reaches its caller, nobody making room: below its bound
/// the reader looks at the socket again while it waits. (It once waited for room only, and
/// the call timed out behind two held messages.)
#[test]
fn a_response_arriving_while_the_reader_holds_below_its_bound_gets_through() {
    for t in TRANSPORTS {
        let s = stalled(t, PeerConfig::default());
        let call = s.b.rpc_start(RPC, Bytes::from_static(b"q"), WAIT).unwrap();
        let Inbound::Request { responder, .. } = recv(&s.a) else {
            panic!("expected B's request")
        };
        // One for the channel, one held.
        s.a.handle.send(DIRECT, numbered(0, 64)).unwrap();
        s.a.handle.send(DIRECT, numbered(1, 64)).unwrap();
        eventually("the first delivered", || {
            s.b.metrics().direct_sends_delivered >= 1
        });
        thread::sleep(SHORT);
        responder.respond(Bytes::from_static(b"late")).unwrap();
        assert_eq!(outcome(call), Ok(Bytes::from_static(b"late")), "{t:?}");
        for i in 0..2 {
            let m = s.direct.recv_timeout(WAIT).expect("held message in time");
            assert_eq!(index_of(m.data()), i, "{t:?}");
        }
    }
}

#[test]
fn rpc_responses_behind_more_than_the_readers_bound_wait_for_room() {
    // About 400 KiB ahead of the response: more than the reader holds (64 KiB) plus one read,
    // and within what the sockets buffer, so A's writer does not wait on B.
    const COUNT: u64 = 100;
    const SIZE: usize = 4096;
    let s = stalled(Transport::Unix, PeerConfig::default());
    let call = answer_behind(&s, COUNT, SIZE);
    // The reader has stopped reading: the response waits with the messages ahead of it.
    match call.wait_timeout(SHORT * 2) {
        Ok(r) => panic!("the response got through past the bound: {r:?}"),
        Err(Err(e)) => panic!("the call failed: {e}"),
        Err(Ok(pending)) => {
            // Room, one message at a time: the reader reads again and finds the response.
            for i in 0..COUNT {
                let m = s.direct.recv_timeout(WAIT).expect("held message in time");
                assert_eq!(index_of(m.data()), i);
            }
            assert_eq!(outcome(pending), Ok(Bytes::from_static(b"a")));
        }
    }
    assert!(s.b.metrics().receive_drops().is_empty());
}

#[test]
fn requests_for_a_full_blocking_handler_wait_in_order_while_the_mux_goes_on() {
    const CALLS: u64 = 6;
    for t in TRANSPORTS {
        let (sa, sb) = sockets(t);
        let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
        let (tx, requests) = crossbeam_channel::bounded(1);
        let b = sb
            .builder()
            .remote_peer_id(PeerId::from_u64(1))
            .handler(RPC, Handler::blocking(tx))
            .spawn()
            .unwrap();
        let calls: Vec<_> = (0..CALLS)
            .map(|i| a.handle.rpc_start(RPC, numbered(i, 8), WAIT).unwrap())
            .collect();
        // One in the channel, the rest held by B's mux, which meanwhile serves B's own
        // traffic: a send and an RPC of B's own get through.
        eventually("the channel full", || requests.is_full());
        b.send(DIRECT, numbered(42, 8)).unwrap();
        assert_eq!(index_of(recv(&a).data()), 42, "{t:?}");
        let h = b.clone();
        let own = thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"mine"), WAIT));
        let Inbound::Request { responder, .. } = recv(&a) else {
            panic!("expected B's request")
        };
        responder.respond(Bytes::from_static(b"yours")).unwrap();
        assert_eq!(
            within("B's rpc", WAIT, move || own.join().unwrap()).as_deref(),
            Ok(&b"yours"[..])
        );
        assert_eq!(b.metrics().requests_delivered, 1, "{t:?}");
        // Now the application takes them, in the order they came.
        for i in 0..CALLS {
            let Inbound::Request {
                data, responder, ..
            } = requests.recv_timeout(WAIT).expect("request in time")
            else {
                panic!("expected a request")
            };
            assert_eq!(index_of(&data), i, "{t:?}");
            responder.respond(data).unwrap();
        }
        for (i, c) in calls.into_iter().enumerate() {
            let answer = outcome(c).unwrap();
            assert_eq!(index_of(&answer), i as u64, "{t:?}");
        }
        let m = b.metrics();
        assert_eq!(m.requests_delivered, CALLS, "{t:?}");
        assert!(m.receive_drops().is_empty(), "{t:?}: {m:?}");
    }
}

#[test]
fn a_request_held_past_its_deadline_is_dropped_and_counted() {
    let (sa, sb) = tcp_pair();
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
    let (tx, requests) = crossbeam_channel::bounded(1);
    let b = sb
        .builder()
        .config(PeerConfig {
            inbound_rpc_timeout: Duration::from_millis(200),
            ..PeerConfig::default()
        })
        .remote_peer_id(PeerId::from_u64(1))
        .handler(RPC, Handler::blocking(tx))
        .spawn()
        .unwrap();
    let first = a.handle.rpc_start(RPC, numbered(0, 8), WAIT).unwrap();
    let second = a
        .handle
        .rpc_start(RPC, numbered(1, 8), Duration::from_millis(400))
        .unwrap();
    eventually("the second held past its deadline", || {
        b.metrics().dropped_handler_full == 1
    });
    let Inbound::Request { responder, .. } = requests.recv_timeout(WAIT).unwrap() else {
        panic!("expected a request")
    };
    // Too late for the first too; the second never reached the application.
    assert!(responder.respond(Bytes::new()).is_err());
    assert!(requests.recv_timeout(SHORT).is_err());
    assert_eq!(outcome(second), Err(RpcError::TimedOut));
    drop(first);
    assert_eq!(b.metrics().requests_delivered, 1);
    drop(a);
}

/// B's reader waiting for room: A has sent far more than the reader holds.
fn blocked_reader(t: Transport, b_config: PeerConfig) -> Stalled {
    let s = stalled(t, b_config);
    for i in 0..2000 {
        s.a.handle.send(DIRECT, numbered(i, 100)).unwrap();
    }
    eventually("the channel full", || s.direct.is_full());
    // Let the reader read what it may, and wait.
    thread::sleep(SHORT);
    s
}

#[test]
fn abort_stops_a_reader_waiting_for_room() {
    for t in TRANSPORTS {
        let s = blocked_reader(t, PeerConfig::default());
        let b = s.b.clone();
        let report = within("abort", Duration::from_secs(5), move || b.abort().unwrap());
        assert!(report.aborted);
        assert_eq!(report.direct_sends_delivered, 1, "{t:?}: {report:?}");
        assert!(report.receive_drops.at_close > 0, "{t:?}: {report:?}");
        assert_eq!(report.receive_drops.handler_full, 0, "{t:?}");
        drop(s);
    }
}

#[test]
fn abort_during_a_graceful_close_stops_a_reader_waiting_for_room_at_once() {
    for t in TRANSPORTS {
        let s = blocked_reader(
            t,
            PeerConfig {
                linger: WAIT,
                ..PeerConfig::default()
            },
        );
        // The reader now waits with the drain deadline, `WAIT` away; the abort must not.
        s.b.close(DisconnectReason::RequestedByPeerManager);
        thread::sleep(SHORT);
        let b = s.b.clone();
        let report = within("abort", Duration::from_secs(5), move || b.abort().unwrap());
        assert!(report.aborted, "{t:?}");
        assert!(report.receive_drops.at_close > 0, "{t:?}: {report:?}");
        drop(s);
    }
}

#[test]
fn shutdown_stops_a_reader_waiting_for_room_at_the_drain_deadline() {
    let linger = Duration::from_millis(500);
    for t in TRANSPORTS {
        let s = blocked_reader(
            t,
            PeerConfig {
                linger,
                ..PeerConfig::default()
            },
        );
        let b = s.b.clone();
        let started = Instant::now();
        let report = within("shutdown", linger + Duration::from_secs(3), move || {
            b.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        assert!(
            started.elapsed() >= linger,
            "{t:?}: waited for the deadline"
        );
        assert!(!report.aborted);
        assert!(report.receive_drops.at_close > 0, "{t:?}: {report:?}");
        assert_eq!(report.direct_sends_delivered, 1, "{t:?}: {report:?}");
        drop(s);
    }
}

#[test]
fn a_blocking_handler_whose_receiver_goes_away_releases_the_reader() {
    for t in TRANSPORTS {
        let s = blocked_reader(t, PeerConfig::default());
        let Stalled { a, b, direct } = s;
        drop(direct);
        // Everything held and everything after is dropped, counted, and the connection goes on.
        eventually("all 2000 accounted for", || {
            let m = b.metrics();
            m.direct_sends_delivered + m.dropped_handler_full == 2000
        });
        let call = thread::spawn({
            let b = b.clone();
            move || b.rpc(RPC, Bytes::from_static(b"alive?"), WAIT)
        });
        let Inbound::Request { responder, .. } = recv(&a) else {
            panic!("expected B's request")
        };
        responder.respond(Bytes::from_static(b"yes")).unwrap();
        assert!(
            within("rpc", WAIT, move || call.join().unwrap()).is_ok(),
            "{t:?}"
        );
        assert_eq!(b.metrics().direct_sends_delivered, 1, "{t:?}");
    }
}
