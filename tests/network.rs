//! The network layer over loopback TCP: mesh formation, broadcast, dial collisions, health
//! checks, a lossless shutdown, and refused handshakes that leave no thread behind.
//!
//! The tests take one lock so they run one at a time: the thread-count check counts every
//! library thread in the process, which other tests running alongside would disturb.

mod common;
mod netkit;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use netkit::{
    Node, VOTES, WAIT, event_where, eventually, hello, id, next_event, node, plain_node, quiet,
    quiet_node_hello, raw_exchange, serial, thread_names, threads, threads_at_start,
    threads_back_to,
};
use syncpeer::network::NetworkId;
use syncpeer::network::{ConnectionOrigin, HEALTH_CHECK_PROTOCOL, HealthCheckConfig, NetworkEvent};
use syncpeer::{
    Bytes, ConnectError, Delivery, DisconnectReason, HandshakeError, Inbound, LinkError, Network,
    NetworkConfig, PeerId, SendError,
};

#[test]
fn network_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Network>();
    assert_send_sync::<NetworkEvent>();
}

#[test]
fn five_nodes_form_a_full_mesh_and_broadcast_reaches_everyone() {
    let _serial = serial();
    let nodes: Vec<Node> = (1..=5).map(|i| node(i, quiet())).collect();
    for i in 0..5 {
        for j in i + 1..5 {
            let got = nodes[i].dial(&nodes[j]).expect("connect");
            assert_eq!(got, id(j as u64 + 1));
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        let others: HashSet<PeerId> = (1..=5).filter(|&k| k != i as u64 + 1).map(id).collect();
        eventually("4 peers each", || {
            n.net.peers().into_iter().collect::<HashSet<_>>() == others
        });
        let connected: HashSet<PeerId> = (0..4)
            .map(|_| match next_event(&n.events) {
                NetworkEvent::Connected(p) => p,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(connected, others);
    }
    for (i, n) in nodes.iter().enumerate() {
        let outcome = n.net.broadcast(VOTES, Bytes::from(vec![i as u8; 32]));
        assert_eq!(outcome.len(), 4);
        assert!(outcome.iter().all(|(_, r)| r.is_ok()), "{outcome:?}");
    }
    for (i, n) in nodes.iter().enumerate() {
        let mut from = HashSet::new();
        for _ in 0..4 {
            match n.inbound.recv_timeout(WAIT).expect("broadcast message") {
                Inbound::Message { from: f, data, .. } => {
                    let sender = f.0[31] as usize - 1;
                    assert_ne!(sender, i);
                    assert_eq!(&data[..], [sender as u8; 32]);
                    assert!(from.insert(f), "one message per sender");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // Each node reports its four connections' ends: those it closed itself, and those the
    // remote closed first when its own shutdown came earlier.
    for n in nodes {
        let reports = n.net.shutdown();
        assert!(reports.iter().all(|(_, r)| r.is_clean()));
        let ends: Vec<_> = n.events.iter().collect();
        assert_eq!(ends.len(), 4, "{ends:?}");
        assert!(
            ends.iter().all(
                |e| matches!(e, NetworkEvent::Disconnected { report, .. } if report.is_clean())
            )
        );
    }
}

#[test]
fn simultaneous_dials_leave_one_connection_both_sides_agree_on() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet()); // the larger id: its dial wins a collision
    let mut collisions = 0;
    for round in 0..8u8 {
        let live_before = a.net.peer(id(2)).is_some();
        let barrier = Barrier::new(2);
        let (ra, rb) = thread::scope(|s| {
            let ta = s.spawn(|| {
                barrier.wait();
                a.dial(&b)
            });
            let tb = s.spawn(|| {
                barrier.wait();
                b.dial(&a)
            });
            (ta.join().unwrap(), tb.join().unwrap())
        });
        // A dial that finds a connection made before it started stops before its handshake
        // (always so when one was live before the round); two dials that overlap both
        // complete, and the tie-break keeps b's.
        let mut already = [false; 2];
        for (i, (r, want)) in [(ra, id(2)), (rb, id(1))].into_iter().enumerate() {
            match r {
                Ok(p) => assert_eq!(p, want),
                Err(ConnectError::AlreadyConnected(p)) => {
                    assert_eq!(p, want);
                    already[i] = true;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        if live_before {
            assert_eq!(
                already,
                [true, true],
                "round {round}: the live one is left alone"
            );
        }
        let agree = || {
            let (Some(ia), Some(ib)) = (a.net.connection(id(2)), b.net.connection(id(1))) else {
                return false;
            };
            a.net.peers() == [id(2)]
                && b.net.peers() == [id(1)]
                && ia.local_addr == ib.remote_addr
                && ia.remote_addr == ib.local_addr
        };
        eventually("one connection both sides agree on", agree);
        // The losers' closes must not take the winner down.
        thread::sleep(Duration::from_millis(50));
        assert!(
            agree(),
            "round {round}: still agreed after the losers closed"
        );
        let (ia, ib) = (
            a.net.connection(id(2)).unwrap(),
            b.net.connection(id(1)).unwrap(),
        );
        let kept_a_dial = ia.origin == ConnectionOrigin::Outbound;
        assert_ne!(ia.origin, ib.origin, "one connection, seen from both ends");
        match already {
            // Both dials overlapped: the tie-break decided.
            [false, false] => {
                assert!(!kept_a_dial, "round {round}: kept b's dial");
                collisions += 1;
            }
            // Only a's dial completed: it is the connection.
            [false, true] if !live_before => assert!(kept_a_dial, "round {round}"),
            [true, false] => assert!(!kept_a_dial, "round {round}"),
            _ => {}
        }
        // The kept connection carries traffic both ways.
        let ping = Bytes::from(vec![round; 4]);
        a.net
            .peer(id(2))
            .unwrap()
            .send(VOTES, ping.clone())
            .unwrap();
        b.net
            .peer(id(1))
            .unwrap()
            .send(VOTES, ping.clone())
            .unwrap();
        for n in [&a, &b] {
            let m = n
                .inbound
                .recv_timeout(WAIT)
                .expect("message over the kept connection");
            assert_eq!(m.data(), &ping);
        }
        // Every other round starts from scratch; the others collide with a live connection.
        if round % 2 == 0 {
            assert!(
                a.net
                    .disconnect(id(2), DisconnectReason::RequestedByPeerManager)
                    .unwrap()
                    .is_clean()
            );
            eventually("both sides disconnected", || {
                a.net.peers().is_empty() && b.net.peers().is_empty()
            });
        }
    }
    log::info!("{collisions} rounds with overlapping dials");
    for n in [a, b] {
        let events = n.events.clone();
        n.net.shutdown();
        let events: Vec<NetworkEvent> = events.iter().collect();
        // Per peer, Connected and Disconnected alternate; every connection the application
        // could send on drained cleanly.
        let mut connected = false;
        for e in &events {
            match e {
                NetworkEvent::Connected(_) => {
                    assert!(!connected, "{events:#?}");
                    connected = true;
                }
                NetworkEvent::Disconnected { report, .. } => {
                    assert!(connected, "{events:#?}");
                    connected = false;
                    assert!(report.is_clean());
                }
                NetworkEvent::Replaced { report, .. } => {
                    assert_eq!(report.reason, DisconnectReason::StaleConnection);
                    assert!(report.is_clean());
                }
                other => panic!("no kept peers here: {other:?}"),
            }
        }
        assert!(!connected, "ends disconnected");
    }
}

/// A remote written by hand: upgrades with `a` properly, then reads and discards everything,
/// answering nothing (so none of `a`'s pings). Ends when `a` closes the connection.
fn silent_peer(a: &Node, me: u64) -> thread::JoinHandle<Vec<u8>> {
    let mut s = TcpStream::connect(a.addr).unwrap();
    std::io::Write::write_all(&mut s, &quiet_node_hello(me)).unwrap();
    thread::spawn(move || {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    })
}

#[test]
fn a_peer_that_stops_answering_pings_is_disconnected() {
    let _serial = serial();
    let checking = NetworkConfig {
        health_check: Some(HealthCheckConfig {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(150),
            failures_tolerated: 2,
        }),
        ..quiet()
    };
    // The silent peer speaks the plaintext upgrade by hand: plaintext nodes.
    let a = plain_node(1, checking);
    let c = plain_node(3, quiet());
    a.dial(&c).unwrap();
    let silent_since = Instant::now();
    let silent = silent_peer(&a, 2);
    eventually("a sees both", || a.net.peers().len() == 2);
    let report = event_where(&a.events, |e| match e {
        NetworkEvent::Disconnected {
            peer_id,
            reason,
            report,
        } => {
            assert_eq!(*peer_id, id(2));
            assert_eq!(*reason, DisconnectReason::NetworkHealthCheckFailure);
            Some(report.clone())
        }
        _ => None,
    });
    // Three pings, each timing out after 150 ms, one after the other, must fail first.
    assert!(silent_since.elapsed() >= Duration::from_millis(450));
    assert!(report.is_clean());
    assert_eq!(a.net.peers(), [id(3)], "the answering peer stays");
    // What the silent peer read: a's identity and handshake, then frames (the pings).
    let got = silent.join().unwrap();
    assert_eq!(got[..40], quiet_node_hello(1)[..]);
    assert!(got.len() > 40, "pings arrived");
    // A real node 2, which answers, connects and stays.
    let b = plain_node(2, quiet());
    a.dial(&b).unwrap();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(a.net.peers().len(), 2);
    for n in [a, b, c] {
        n.net.shutdown();
    }
}

#[test]
fn shutdown_delivers_every_accepted_message() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet());
    a.dial(&b).unwrap();
    eventually("b sees a", || b.net.peer(id(1)).is_some());
    let sent = AtomicU64::new(0);
    let accepted: Vec<(u64, u64)> = thread::scope(|s| {
        let senders: Vec<_> = [(&a, 2), (&a, 2), (&b, 1), (&b, 1)]
            .into_iter()
            .enumerate()
            .map(|(t, (n, to))| {
                let handle = n.net.peer(id(to)).unwrap();
                let sent = &sent;
                s.spawn(move || {
                    let mut seq = 0u64;
                    loop {
                        let mut payload = vec![t as u8];
                        payload.extend_from_slice(&seq.to_be_bytes());
                        match handle.send(VOTES, Bytes::from(payload)) {
                            Ok(()) => seq += 1,
                            Err(LinkError::Peer(SendError::Closed(_))) => return (t as u64, seq),
                            Err(e) => panic!("{e}"),
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        eventually("traffic in flight", || {
            sent.load(Ordering::Relaxed) >= 40_000
        });
        // Close a's side while all four senders are still going.
        let reports = a
            .net
            .disconnect(id(2), DisconnectReason::RequestedByPeerManager);
        assert!(reports.unwrap().is_clean());
        senders.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (n, from_threads) in [(&b, [0u64, 1]), (&a, [2, 3])] {
        // Deliveries happen before the connection's Disconnected event.
        let report = loop {
            if let NetworkEvent::Disconnected { report, .. } = next_event(&n.events) {
                break report;
            }
        };
        assert!(report.is_clean(), "{report:?}");
        let mut next: HashMap<u64, u64> = HashMap::new();
        for m in n.inbound.try_iter() {
            let d = m.data();
            let (t, seq) = (
                u64::from(d[0]),
                u64::from_be_bytes(d[1..9].try_into().unwrap()),
            );
            let expected = next.entry(t).or_default();
            assert_eq!(seq, *expected, "in order, no gap, no duplicate");
            *expected += 1;
        }
        for t in from_threads {
            let accepted_by_t = accepted.iter().find(|(x, _)| *x == t).unwrap().1;
            assert_eq!(
                next.get(&t).copied().unwrap_or(0),
                accepted_by_t,
                "thread {t}"
            );
        }
    }
    let total: u64 = accepted.iter().map(|(_, n)| n).sum();
    assert!(total >= 40_000);
    for n in [a, b] {
        assert!(n.net.shutdown().is_empty(), "nothing left to close");
    }
}

#[test]
fn network_shutdown_loses_nothing_and_receipts_say_written() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet());
    a.dial(&b).unwrap();
    let mut receipts = Vec::new();
    let mut accepted = 0;
    for i in 0..5_000u32 {
        for (_, r) in a
            .net
            .broadcast_with_receipts(VOTES, Bytes::from(i.to_be_bytes().to_vec()))
        {
            if let Ok(receipt) = r {
                receipts.push(receipt);
                accepted += 1;
            }
        }
    }
    let reports = a.net.shutdown();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].1.is_clean());
    for r in &receipts {
        assert_eq!(r.wait_timeout(WAIT), Some(Delivery::Written));
    }
    eventually("b sees the close", || b.net.peers().is_empty());
    assert_eq!(b.inbound.try_iter().count(), accepted);
    b.net.shutdown();
}

/// A one-connection server that writes `reply`, then waits for the client to go.
fn fake_server(reply: Vec<u8>) -> (std::net::SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = std::io::Write::write_all(&mut s, &reply);
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    });
    (addr, t)
}

#[test]
fn failed_handshakes_are_refused_and_leave_no_thread_behind() {
    let _serial = serial();
    let before = threads_at_start();
    // The remotes below speak the plaintext upgrade by hand (tests/network_noise.rs has the
    // Noise counterparts).
    let n = plain_node(1, quiet());
    let validators = Network::builder(id(2))
        .insecure_plaintext()
        .handler(VOTES, unbounded::<Inbound>().0)
        .config(NetworkConfig {
            network_id: NetworkId::Validator,
            ..quiet()
        })
        .build()
        .unwrap();
    let other_addr = validators.listen("127.0.0.1:0").unwrap();
    // A new thread names itself once it runs: wait for that. Each network has a monitor, a
    // dialer and a listener, named after its node.
    let base = before + 6;
    eventually("three threads per network", || threads() == base);
    let names = thread_names();
    for want in ["sp-mon-00000001", "sp-dia-00000001", "sp-lis-00000002"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }

    // Dialing side: typed errors, from remotes written by hand.
    let malformed = {
        let mut h = hello(id(7), &[0x44], 4, &[0x01]);
        h[32 + 2 + 1] = 0x01; // messaging version 1: unknown to Aptos
        h
    };
    type Expected = fn(&HandshakeError) -> bool;
    let cases: [(Vec<u8>, Expected); 5] = [
        (
            hello(id(7), &[0x44], 9, &[0x01]),
            |e| matches!(e, HandshakeError::InvalidChainId { theirs, ours } if theirs.0 == 9 && ours.0 == 4),
        ),
        (hello(id(7), &[0x44], 4, b"\x02\x03vfn"), |e| {
            matches!(
                e,
                HandshakeError::InvalidNetworkId {
                    theirs: NetworkId::Vfn,
                    ours: NetworkId::Public
                }
            )
        }),
        // Protocol 9 only (byte 1, bit 0x40): nothing in common, not even health checks.
        (hello(id(7), &[0x00, 0x40], 4, &[0x01]), |e| {
            matches!(e, HandshakeError::NoCommonProtocols)
        }),
        (malformed, |e| matches!(e, HandshakeError::Malformed { .. })),
        (Vec::new(), |e| matches!(e, HandshakeError::TimedOut)),
    ];
    for (reply, expected) in cases {
        let (addr, server) = fake_server(reply);
        let started = Instant::now();
        match n.net.connect_insecure(addr) {
            Err(ConnectError::Handshake(e)) => assert!(expected(&e), "{e}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        server.join().unwrap();
    }
    match n.net.connect_insecure(n.addr) {
        Err(ConnectError::Handshake(HandshakeError::SelfConnection)) => {}
        other => panic!("unexpected {other:?}"),
    }
    match n.net.connect_insecure(other_addr) {
        Err(e @ ConnectError::Handshake(HandshakeError::InvalidNetworkId { .. })) => {
            assert_eq!(
                e.to_string(),
                "handshake failed: the remote is on the validator network, \
                 this node on the public network"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(
        n.net.connect_insecure(closed_port),
        Err(ConnectError::Dial(_))
    ));
    assert!(matches!(
        n.net.connect_insecure("no-such-host.invalid:1"),
        Err(ConnectError::Resolve(_))
    ));

    // Listening side: the server's identity and handshake, byte for byte, then the close.
    let wrong_chain = hello(id(7), &[0x44], 9, &[0x01]);
    for (hello, what) in [
        (&wrong_chain[..], "wrong chain"),
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "garbage"),
        (&b""[..], "silence"),
    ] {
        let got = raw_exchange(n.addr, hello, WAIT);
        // Garbage and silence are too short to be an identity: only it comes back.
        let expected = quiet_node_hello(1);
        let len = if what == "wrong chain" { 40 } else { 32 };
        assert_eq!(got, expected[..len], "{what}");
    }
    assert!(n.net.peers().is_empty() && validators.peers().is_empty());
    eventually("no thread left by the failed handshakes", || {
        threads() == base
    });

    assert!(matches!(
        Network::builder(id(3))
            .insecure_plaintext()
            .handler(HEALTH_CHECK_PROTOCOL, unbounded::<Inbound>().0)
            .build(),
        Err(syncpeer::network::BuildError::ReservedProtocol(_))
    ));
    n.net.shutdown();
    validators.shutdown();
    threads_back_to(before, "no thread left after shutdown");
}

/// Regression (src/peer/mux.rs): after the remote's EOF no RPC response can arrive, so the
/// close must not wait `linger` for one. It did, which held every health-check or collision
/// close with a ping in flight for the whole linger.
#[test]
fn close_after_eof_does_not_wait_for_rpc_responses() {
    let _serial = serial();
    let (a, b) = common::pair_with(common::Transport::Tcp, syncpeer::PeerConfig::default(), 16);
    let pending = a
        .handle
        .rpc_start(common::RPC, Bytes::from_static(b"q"), WAIT)
        .unwrap();
    let _held = common::recv(&b); // b's application holds the request, never answers
    let started = Instant::now();
    b.handle.abort().unwrap();
    let closed = common::disconnected(&a);
    assert_eq!(closed.reason, DisconnectReason::ConnectionClosed);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pending.wait(), Err(syncpeer::RpcError::Disconnected));
    assert_eq!(closed.report.rpcs_failed_at_close, 1);
    // Leave no thread behind for the thread-count test.
    a.handle.join().unwrap();
    b.handle.join().unwrap();
}
