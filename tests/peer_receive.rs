//! The receiving side accounts for every message, and a blocking handler loses none.
//!
//! - Under a flood, for both handler kinds (a dropping channel, a blocking channel), what one
//!   side wrote equals what the other delivered plus what it dropped, by cause, exactly.
//! - A blocking handler keeps the order of the messages of every protocol it serves.
//! - While a blocking handler is full, RPC responses already read still reach their callers,
//!   and those behind more than the reader's bound wait for room (documented, checked).
//! - Requests for a full blocking handler wait in the mux, in order, while it goes on.
//! - A reader waiting for room stops on `abort`, at the drain deadline of `shutdown`, and when
//!   the handler's receiver goes away.
//! - Keyed queues' drops are counted as `handler_full`, and what is delivered is what stays
//!   for the application to take.
//! - A `Network` sums the counters of its connections, live and closed.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::{Receiver, Sender, select};
use syncpeer::keyed::{self, QueueStyle};
use syncpeer::{
    Bytes, DisconnectReason, DrainReport, Handler, HandlerKey, Inbound, Network, NetworkConfig,
    Peer, PeerConfig, PeerHandle, PeerId, PendingRpc, ProtocolId, RpcError,
};

/// A protocol the receiver has no handler for.
const UNKNOWN: ProtocolId = ProtocolId(7);
/// A second direct-send protocol.
const DIRECT2: ProtocolId = ProtocolId(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dropping,
    Blocking,
}

fn handler(kind: Kind, tx: Sender<Inbound>) -> Handler {
    match kind {
        Kind::Dropping => tx.into(),
        Kind::Blocking => Handler::blocking(tx),
    }
}

/// What the receiving application took from its handler channels.
#[derive(Debug, Default)]
struct Taken {
    messages: u64,
    requests: u64,
    /// Indices of the direct sends, in the order taken.
    indices: Vec<u64>,
}

/// Takes from `direct` and `requests` until both disconnect (the connection's threads have
/// ended), answering every request; pauses `pause` every `every` direct sends. Every wait is
/// bounded by `WAIT`.
fn consume(
    direct: Receiver<Inbound>,
    requests: Receiver<Inbound>,
    every: u64,
    pause: Duration,
) -> thread::JoinHandle<Taken> {
    thread::spawn(move || {
        let mut taken = Taken::default();
        let never = crossbeam_channel::never();
        let (mut d_open, mut r_open) = (true, true);
        while d_open || r_open {
            let d = if d_open { &direct } else { &never };
            let r = if r_open { &requests } else { &never };
            select! {
                recv(d) -> m => match m {
                    Ok(m) => {
                        taken.messages += 1;
                        taken.indices.push(index_of(m.data()));
                        if taken.messages.is_multiple_of(every) {
                            thread::sleep(pause);
                        }
                    }
                    Err(_) => d_open = false,
                },
                recv(r) -> m => match m {
                    Ok(Inbound::Request { data, responder, .. }) => {
                        taken.requests += 1;
                        let _ = responder.respond(data);
                    }
                    Ok(other) => panic!("a direct send on the request channel: {other:?}"),
                    Err(_) => r_open = false,
                },
                default(WAIT) => panic!("the consumer waited {WAIT:?} for nothing"),
            }
        }
        taken
    })
}

/// The outcome of an RPC, which must come within `WAIT`.
#[track_caller]
fn outcome(call: PendingRpc) -> Result<Bytes, RpcError> {
    match call.wait_timeout(WAIT) {
        Ok(answer) => Ok(answer),
        Err(Err(e)) => Err(e),
        Err(Ok(_)) => panic!("no outcome within {WAIT:?}"),
    }
}

/// Checks the equation across a pair: what `sender` wrote (it sent only direct sends and
/// requests) is what `receiver` delivered plus what it dropped, by cause.
#[track_caller]
fn assert_accounted(what: &str, sender: &DrainReport, receiver: &DrainReport) {
    assert_eq!(
        sender.messages_written,
        receiver.delivered() + receiver.receive_drops.total(),
        "{what}: written by the sender {sender:?}, delivered and dropped by the receiver \
         {receiver:?}"
    );
}

/// A floods B with direct sends in bursts, RPC requests past B's inbound limit, and direct
/// sends for a protocol B has no handler for; B's application is slower than the flood.
fn flood(kind: Kind, t: Transport) {
    const BURSTS: u64 = 100;
    const BURST: u64 = 200;
    const UNKNOWNS: u64 = 50;
    const RPC_ROUNDS: u64 = 5;
    const RPC_BATCH: u64 = 30;
    let what = format!("{kind:?} over {t:?}");
    let (sa, sb) = sockets(t);
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
    let b_config = PeerConfig {
        max_concurrent_inbound_rpcs: 8,
        ..PeerConfig::default()
    };
    let (dtx, drx) = crossbeam_channel::bounded(64);
    let (rtx, rrx) = crossbeam_channel::bounded(4);
    let (ntx, notices) = crossbeam_channel::unbounded();
    let b = Peer::builder(sb)
        .config(b_config)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(DIRECT, handler(kind, dtx))
        .handler(RPC, handler(kind, rtx))
        .on_disconnect(ntx)
        .spawn()
        .expect("spawn B");
    let consumer = consume(drx, rrx, 64, Duration::from_millis(1));

    let h = a.handle.clone();
    let sender = thread::spawn(move || {
        for burst in 0..BURSTS {
            for i in 0..BURST {
                h.send(DIRECT, numbered(burst * BURST + i, 64)).unwrap();
            }
            if burst.is_multiple_of(BURSTS / UNKNOWNS) {
                h.send(UNKNOWN, numbered(burst, 64)).unwrap();
            }
        }
    });
    let h = a.handle.clone();
    let caller = thread::spawn(move || {
        let mut outcomes = [0u64; 2];
        for round in 0..RPC_ROUNDS {
            let calls: Vec<_> = (0..RPC_BATCH)
                .map(|i| {
                    let data = numbered(round * RPC_BATCH + i, 16);
                    h.rpc_start(RPC, data, Duration::from_millis(300)).unwrap()
                })
                .collect();
            for c in calls {
                match outcome(c) {
                    Ok(_) => outcomes[0] += 1,
                    Err(_) => outcomes[1] += 1,
                }
            }
        }
        outcomes
    });
    within("sender", WAIT * 2, move || sender.join().unwrap());
    let [answered, failed] = within("caller", WAIT * 2, move || caller.join().unwrap());
    let ra = a
        .handle
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    // B closes at A's EOF, having read everything.
    let rb = notices.recv_timeout(WAIT).expect("B's notice").report;
    let taken = within("consumer", WAIT, move || consumer.join().unwrap());
    let mb = b.metrics();

    assert!(ra.is_clean(), "{what}: {ra:?}");
    assert_eq!(rb.reason, DisconnectReason::ConnectionClosed, "{what}");
    assert_accounted(&what, &ra, &rb);
    // The counters agree with the report, and what was delivered is what the application took.
    assert_eq!(mb.receive_drops(), rb.receive_drops, "{what}");
    assert_eq!(mb.delivered(), rb.delivered(), "{what}");
    assert_eq!(rb.direct_sends_delivered, taken.messages, "{what}");
    assert_eq!(rb.requests_delivered, taken.requests, "{what}");
    assert_eq!(answered + failed, RPC_ROUNDS * RPC_BATCH, "{what}");
    // Every call answered was delivered (a delivered one may still have timed out).
    assert!(
        answered <= rb.requests_delivered,
        "{what}: {answered} answered, {rb:?}"
    );
    let drops = rb.receive_drops;
    assert_eq!(drops.unknown_protocol, UNKNOWNS, "{what}: {rb:?}");
    assert_eq!(
        (drops.malformed, drops.stream_rejected, drops.at_close),
        (0, 0, 0),
        "{what}: {rb:?}"
    );
    assert!(
        taken.indices.windows(2).all(|w| w[0] < w[1]),
        "{what}: direct sends out of order"
    );
    match kind {
        Kind::Dropping => assert!(
            drops.handler_full > 0,
            "{what}: the flood never filled the handler, the test proved little: {rb:?}"
        ),
        Kind::Blocking => {
            assert_eq!(drops.handler_full, 0, "{what}: {rb:?}");
            assert_eq!(taken.messages, BURSTS * BURST, "{what}: every direct send");
        }
    }
    // Requests past the limit were dropped on both kinds: the remote's callers timed out.
    assert!(drops.inbound_rpc_limit > 0, "{what}: {rb:?}");
    assert!(
        failed >= drops.inbound_rpc_limit,
        "{what}: {failed} failed, {rb:?}"
    );
}

#[test]
fn under_a_flood_written_equals_delivered_plus_dropped_for_a_dropping_handler() {
    for t in TRANSPORTS {
        flood(Kind::Dropping, t);
    }
}

#[test]
fn under_a_flood_a_blocking_handler_loses_nothing_and_the_equation_holds() {
    for t in TRANSPORTS {
        flood(Kind::Blocking, t);
    }
}

#[test]
fn a_blocking_handler_keeps_the_order_of_the_protocols_sharing_its_channel() {
    const N: u64 = 3000;
    for t in TRANSPORTS {
        let (sa, sb) = sockets(t);
        let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
        let (tx, rx) = crossbeam_channel::bounded(2);
        let (ntx, notices) = crossbeam_channel::unbounded();
        let b = Peer::builder(sb)
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

/// B with a blocking handler of one slot for `DIRECT`, which nobody reads yet, and a roomy
/// channel for `RPC` requests; A answers B's requests through `answer`.
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
    let b = Peer::builder(sb)
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
        let b = Peer::builder(sb)
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
    let b = Peer::builder(sb)
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

/// A keyed queue as B's handler; nobody takes from it until both sides have closed.
fn keyed_flood(style: QueueStyle) -> (DrainReport, DrainReport, Vec<u64>) {
    const N: u64 = 50;
    const CAPACITY: usize = 4;
    let (sa, sb) = tcp_pair();
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
    let (ktx, krx) = keyed::channel::<HandlerKey, Inbound>(style, CAPACITY).unwrap();
    let (ntx, notices) = crossbeam_channel::unbounded();
    let _b = Peer::builder(sb)
        .remote_peer_id(PeerId::from_u64(1))
        .handler(DIRECT, ktx)
        .on_disconnect(ntx)
        .spawn()
        .unwrap();
    for i in 0..N {
        a.handle.send(DIRECT, numbered(i, 8)).unwrap();
    }
    let ra = a
        .handle
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    let rb = notices.recv_timeout(WAIT).unwrap().report;
    let taken = std::iter::from_fn(|| krx.try_recv().ok())
        .map(|(_, m)| index_of(m.data()))
        .collect();
    assert_eq!(ra.messages_written, N);
    (ra, rb, taken)
}

#[test]
fn keyed_queue_drops_are_counted_and_delivered_is_what_the_application_can_take() {
    for (style, kept) in [
        (QueueStyle::Fifo, vec![0, 1, 2, 3]),
        (QueueStyle::Klast, vec![46, 47, 48, 49]),
        (QueueStyle::Lifo, vec![49, 48, 47, 46]),
    ] {
        let (ra, rb, taken) = keyed_flood(style);
        assert_accounted(&format!("{style:?}"), &ra, &rb);
        assert_eq!(taken, kept, "{style:?}");
        assert_eq!(rb.direct_sends_delivered, 4, "{style:?}: {rb:?}");
        assert_eq!(rb.receive_drops.handler_full, 46, "{style:?}: {rb:?}");
    }
}

#[test]
fn network_totals_sum_live_and_closed_connections() {
    init_logging();
    let config = || NetworkConfig {
        health_check: None,
        ..NetworkConfig::default()
    };
    let (tx, inbound) = crossbeam_channel::unbounded();
    let server = Network::builder(PeerId::from_u64(1))
        .handler(DIRECT, Handler::blocking(tx))
        .protocol(UNKNOWN)
        .config(config())
        .build()
        .unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for round in 0..3u64 {
        let client = Network::builder(PeerId::from_u64(10 + round))
            .protocol(DIRECT)
            .protocol(UNKNOWN)
            .config(config())
            .build()
            .unwrap();
        let server_id = client.connect(addr).unwrap();
        let link = client.wait_for_peer(server_id, WAIT).unwrap();
        for i in 0..100 {
            link.send(DIRECT, numbered(i, 8)).unwrap();
        }
        link.send(UNKNOWN, numbered(0, 8)).unwrap();
        sent += 100;
        // Live: counted as it stands.
        eventually("delivered, live", || {
            let t = server.totals();
            t.direct_sends_delivered == sent && t.dropped_unknown_protocol == round + 1
        });
        // Closed: counted once, as it ended.
        let reports = client.shutdown();
        assert_eq!(reports.len(), 1);
        eventually("the connection gone", || server.peers().is_empty());
        let t = server.totals();
        assert_eq!(t.direct_sends_delivered, sent, "round {round}: {t:?}");
        assert_eq!(t.dropped_unknown_protocol, round + 1, "round {round}");
        assert_eq!(t.receive_drops().total(), round + 1, "round {round}");
    }
    server.shutdown();
    let t = server.totals();
    assert_eq!(
        (t.direct_sends_delivered, t.dropped_unknown_protocol),
        (300, 3)
    );
    assert_eq!(inbound.try_iter().count(), 300);
}
