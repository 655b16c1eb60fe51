//! The receiving side accounts for every message, and a blocking handler loses none.
//!
//! - Under a flood, for both handler kinds (a dropping channel, a blocking channel), what one
//!   side wrote equals what the other delivered plus what it dropped, by cause, exactly.
//! - Keyed queues' drops are counted as `handler_full`, and what is delivered is what stays
//!   for the application to take.
//! - A `Network` sums the counters of its connections, live and closed.
//!
//! How a blocking handler pushes back and stays stoppable is in `peer_blocking.rs`.

mod common;

use std::thread;
use std::time::Duration;

use common::*;
use crossbeam_channel::{Receiver, Sender, select};
use syncpeer::keyed::{self, QueueStyle};
use syncpeer::{
    DisconnectReason, DrainReport, Handler, HandlerKey, Inbound, Network, NetworkConfig,
    PeerConfig, PeerId, ProtocolId,
};

/// A protocol the receiver has no handler for.
const UNKNOWN: ProtocolId = ProtocolId(7);

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
    let b = sb
        .builder()
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

/// A keyed queue as B's handler; nobody takes from it until both sides have closed.
fn keyed_flood(style: QueueStyle) -> (DrainReport, DrainReport, Vec<u64>) {
    const N: u64 = 50;
    const CAPACITY: usize = 4;
    let (sa, sb) = tcp_pair();
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 64);
    let (ktx, krx) = keyed::channel::<HandlerKey, Inbound>(style, CAPACITY).unwrap();
    let (ntx, notices) = crossbeam_channel::unbounded();
    let _b = sb
        .builder()
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
        .insecure_plaintext()
        .build()
        .unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    let mut sent = 0;
    for round in 0..3u64 {
        let client = Network::builder(PeerId::from_u64(10 + round))
            .protocol(DIRECT)
            .protocol(UNKNOWN)
            .config(config())
            .insecure_plaintext()
            .build()
            .unwrap();
        let server_id = client.connect_insecure(addr).unwrap();
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
