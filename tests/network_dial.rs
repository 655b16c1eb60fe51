//! The network as a service uses it: dials that leave a live connection alone, kept peers
//! redialed with backoff, waiting for a peer, one subscription per `events` call, sends on
//! protocols the remote does not speak refused at once, and a shutdown that works through an
//! `Arc`, from the thread that answers RPCs too.

mod netkit;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use netkit::{
    VOTES, WAIT, dial, event_where, eventually, id, keep, next_event, node, node_at, noise_on,
    quiet, serial, threads_at_start, threads_back_to,
};
use syncpeer::network::{NetworkEvent, ProtocolIdSet, WaitError};
use syncpeer::noise::HandshakeErrorKind;
use syncpeer::{Bytes, ConnectError, Inbound, LinkError, PeerConfig, PeerId, ProtocolId, RpcError};

/// Regression (issue 14): five more `connect`s to a connected peer each replaced the live
/// connection (`Connected, Disconnected, Connected, Replaced×4`) and closed every handle the
/// application held.
#[test]
fn connect_to_a_connected_peer_leaves_the_connection_alone() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet());
    // Any `ToSocketAddrs`: here a name that resolves to loopback.
    let by_name = format!("localhost:{}", b.addr.port());
    assert_eq!(dial(&a.net, by_name.as_str(), 2).expect("connect"), id(2));
    let held = a.net.wait_for_peer(id(2), WAIT).expect("connected");
    for _ in 0..5 {
        match a.dial(&b) {
            Err(e @ ConnectError::AlreadyConnected(p)) => {
                assert_eq!(p, id(2));
                assert_eq!(e.to_string(), "already connected to peer 00000002");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The other side's dials are refused the same way.
    assert!(matches!(b.dial(&a), Err(ConnectError::AlreadyConnected(_))));
    assert!(!held.is_closed(), "the handle the application held is open");
    held.send(VOTES, Bytes::from_static(b"still here")).unwrap();
    assert_eq!(
        b.inbound.recv_timeout(WAIT).unwrap().data(),
        &Bytes::from_static(b"still here")
    );
    for n in [&a, &b] {
        assert_eq!(
            next_event(&n.events),
            NetworkEvent::Connected(n.net.peers()[0])
        );
        thread::sleep(Duration::from_millis(100));
        assert!(n.events.try_recv().is_err(), "no other event");
    }
    a.net.shutdown();
    b.net.shutdown();
}

#[test]
fn sends_on_protocols_not_negotiated_fail_at_once() {
    let _serial = serial();
    const ONLY_A: ProtocolId = ProtocolId(7);
    let (tx, _rx) = unbounded::<Inbound>();
    let a = netkit::builder(1)
        .handler(VOTES, tx)
        .protocol(ONLY_A)
        .config(quiet())
        .build()
        .unwrap();
    let b = node(2, quiet());
    dial(&a, b.addr, 2).unwrap();
    let link = a.wait_for_peer(id(2), WAIT).unwrap();
    let expected: ProtocolIdSet = [VOTES, ProtocolId(5)].into_iter().collect();
    assert_eq!(*link.protocols(), expected);
    assert_eq!(a.connection(id(2)).unwrap().protocols, expected);
    let started = Instant::now();
    match link.rpc(ONLY_A, Bytes::from_static(b"q"), WAIT) {
        Err(LinkError::NotNegotiated { protocol, data }) => {
            assert_eq!(protocol, ONLY_A);
            assert_eq!(&data[..], b"q", "the request is handed back");
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = link.send(ONLY_A, Bytes::from_static(b"m")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "protocol 7 was not negotiated with the remote"
    );
    assert!(started.elapsed() < Duration::from_millis(500), "at once");
    assert!(
        a.broadcast(ONLY_A, Bytes::new()).is_empty(),
        "nobody speaks it"
    );
    assert_eq!(a.broadcast(VOTES, Bytes::new()).len(), 1);
    // A negotiated RPC on the same link goes through (and fails only as RPCs do).
    assert!(matches!(
        link.rpc(VOTES, Bytes::new(), Duration::from_millis(50)),
        Err(LinkError::Peer(RpcError::TimedOut))
    ));
    a.shutdown();
    b.net.shutdown();
}

#[test]
fn kept_peers_are_redialed_with_backoff_until_they_are_back() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet());
    let b_addr = b.addr;
    assert!(matches!(
        a.net.wait_for_peer(id(2), Duration::from_millis(50)),
        Err(WaitError::TimedOut)
    ));
    keep(&a.net, 2, b_addr).unwrap();
    a.net
        .wait_for_peer(id(2), WAIT)
        .expect("dialed in the background");
    assert!(matches!(
        next_event(&a.events),
        NetworkEvent::Dialing { attempt: 1, .. }
    ));
    assert_eq!(next_event(&a.events), NetworkEvent::Connected(id(2)));
    // b goes away: a notices and redials, with growing delays up to the cap.
    b.net.shutdown();
    let lost = Instant::now();
    event_where(&a.events, |e| {
        matches!(e, NetworkEvent::Disconnected { .. }).then_some(())
    });
    let cfg = quiet().reconnect;
    let mut delays = Vec::new();
    while delays.len() < 5 {
        match next_event(&a.events) {
            NetworkEvent::Dialing { attempt, addr, .. } => {
                assert_eq!(attempt as usize, delays.len() + 1);
                assert_eq!(addr, b_addr);
            }
            NetworkEvent::DialFailed {
                attempt,
                retry_in,
                error,
                ..
            } => {
                assert_eq!(attempt as usize, delays.len() + 1);
                assert!(error.starts_with("dial failed"), "{error}");
                delays.push(retry_in);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // 40, 80, 160 (the cap), 160, 160 ms, each plus a jitter below 10 ms.
    let base = [40u64, 80, 160, 160, 160];
    for (d, ms) in delays.iter().zip(base) {
        let ms = Duration::from_millis(ms);
        assert!(*d >= ms && *d < ms + cfg.jitter, "{delays:?}");
    }
    // b comes back at the same address: a reconnects within one capped delay (plus dial).
    let b = node_at(2, quiet(), &b_addr.to_string());
    let back = Instant::now();
    let link = a.net.wait_for_peer(id(2), WAIT).expect("reconnected");
    let took = back.elapsed();
    assert!(
        took < cfg.max_delay + cfg.jitter + Duration::from_millis(500),
        "{took:?}"
    );
    link.send(VOTES, Bytes::from_static(b"back")).unwrap();
    assert_eq!(&b.inbound.recv_timeout(WAIT).unwrap().data()[..], b"back");
    log::info!(
        "lost for {:?}, reconnected {took:?} after the restart",
        lost.elapsed()
    );
    // Forgotten: no more redials once it goes again.
    a.net.stop_keeping(id(2));
    b.net.shutdown();
    event_where(&a.events, |e| {
        matches!(e, NetworkEvent::Disconnected { .. }).then_some(())
    });
    thread::sleep(Duration::from_millis(300));
    assert!(a.events.try_recv().is_err(), "no dial after stop_keeping");
    a.net.shutdown();
}

#[test]
fn a_kept_address_that_answers_as_another_peer_is_not_accepted() {
    let _serial = serial();
    let a = node(1, quiet());
    let c = node(3, quiet());
    keep(&a.net, 2, c.addr).unwrap();
    let error = event_where(&a.events, |e| match e {
        NetworkEvent::DialFailed { error, .. } => Some(error.clone()),
        _ => None,
    });
    if noise_on() {
        // Over Noise the dial names node 2's key: node 3 refuses to answer for it.
        assert_eq!(
            error,
            "handshake failed: connection closed during the handshake"
        );
        let stats = c.net.noise_config().expect("noise").stats();
        assert_eq!(
            stats.handshake_failures(HandshakeErrorKind::WrongResponderKey),
            1
        );
    } else {
        assert_eq!(
            error,
            "handshake failed: expected peer 00000002, reached peer 00000003"
        );
    }
    assert!(a.net.peers().is_empty() && c.net.peers().is_empty());
    assert!(matches!(
        keep(&a.net, 1, c.addr),
        Err(syncpeer::network::KeepError::LocalPeer)
    ));
    a.net.shutdown();
    c.net.shutdown();
}

#[test]
fn every_events_call_is_a_subscription_of_its_own() {
    let _serial = serial();
    let a = node(1, quiet());
    let b = node(2, quiet());
    let (s1, s2) = (a.net.events(), a.net.events());
    a.dial(&b).unwrap();
    for s in [&s1, &s2, &a.events] {
        assert_eq!(next_event(s), NetworkEvent::Connected(id(2)));
    }
    let late = a.net.events();
    drop(s2); // a dropped subscription is forgotten, not an error
    a.net.shutdown();
    for s in [&s1, &late] {
        assert!(matches!(next_event(s), NetworkEvent::Disconnected { .. }));
        // Disconnected after the shutdown: the iterator ends.
        assert_eq!(s.iter().count(), 0);
    }
    assert!(a.net.events().recv_timeout(WAIT).is_err(), "shut down");
    b.net.shutdown();
}

#[test]
fn shutdown_through_an_arc_once_and_drop_closes_too() {
    let _serial = serial();
    let before = threads_at_start();
    let a = Arc::new(node(1, quiet()).net);
    let b = node(2, quiet());
    dial(&a, b.addr, 2).unwrap();
    let events = a.events();
    let (first, second) = thread::scope(|s| {
        let t1 = s.spawn(|| a.shutdown());
        let t2 = s.spawn(|| a.shutdown());
        (t1.join().unwrap(), t2.join().unwrap())
    });
    // Exactly one of the calls did the work.
    let mut reports = [first, second];
    reports.sort_by_key(Vec::len);
    assert!(reports[0].is_empty());
    assert_eq!(reports[1].len(), 1);
    assert!(reports[1][0].1.is_clean());
    assert!(a.shutdown().is_empty(), "again: nothing more");
    assert!(matches!(
        dial(&a, b.addr, 2),
        Err(ConnectError::ShuttingDown)
    ));
    assert!(matches!(
        a.wait_for_peer(id(2), WAIT),
        Err(WaitError::ShuttingDown)
    ));
    assert_eq!(events.iter().count(), 1, "one Disconnected, then the end");
    drop(a);
    // Dropping the other network closes it gracefully: its peer sees the remote's close.
    let c = node(3, quiet());
    c.dial(&b).unwrap();
    eventually("b sees c", || b.net.peer(id(3)).is_some());
    drop(c.net);
    let reason = event_where(&b.events, |e| match e {
        NetworkEvent::Disconnected {
            peer_id, reason, ..
        } if *peer_id == id(3) => Some(*reason),
        _ => None,
    });
    assert_eq!(reason, syncpeer::DisconnectReason::ConnectionClosed);
    b.net.shutdown();
    threads_back_to(before, "no thread left");
}

/// The pattern the module docs show: the thread that answers RPCs runs the shutdown on a
/// scoped thread and keeps answering. Blocking in `shutdown` there instead makes the close
/// wait the whole `linger` for the request sitting in that thread's own queue.
#[test]
fn the_rpc_answering_thread_can_shut_down_without_waiting_linger() {
    let _serial = serial();
    let linger = Duration::from_millis(800);
    let server_with = || {
        let (tx, inbound) = unbounded::<Inbound>();
        let net = netkit::builder(1)
            .handler(VOTES, tx)
            .config(quiet())
            .peer_config(PeerConfig {
                linger,
                ..Default::default()
            })
            .build()
            .unwrap();
        let addr = net.listen("127.0.0.1:0").unwrap();
        (net, addr, inbound)
    };
    let client = node(2, quiet());
    for answering in [false, true] {
        let (server, addr, inbound) = server_with();
        dial(&client.net, addr, 1).unwrap();
        let link = client.net.wait_for_peer(id(1), WAIT).unwrap();
        let call = link
            .rpc_start(VOTES, Bytes::from_static(b"q"), WAIT)
            .unwrap();
        let mut owed = Some(inbound.recv_timeout(WAIT).unwrap());
        let started = Instant::now();
        let reports = if answering {
            thread::scope(|s| {
                let closing = s.spawn(|| server.shutdown());
                while !closing.is_finished() {
                    let next = owed
                        .take()
                        .or_else(|| inbound.recv_timeout(Duration::from_millis(5)).ok());
                    if let Some(Inbound::Request {
                        data, responder, ..
                    }) = next
                    {
                        let _ = responder.respond(data);
                    }
                }
                closing.join().unwrap()
            })
        } else {
            server.shutdown() // the request in `owed` is never answered
        };
        let took = started.elapsed();
        assert!(reports[0].1.is_clean());
        if answering {
            assert!(took < linger / 2, "{took:?}");
            assert_eq!(call.wait(), Ok(Bytes::from_static(b"q")));
        } else {
            assert!(took >= linger, "{took:?}");
            assert_eq!(call.wait(), Err(RpcError::Disconnected));
        }
        drop(owed);
        eventually("client sees the close", || client.net.peers().is_empty());
    }
    client.net.shutdown();
}

#[test]
fn peer_ids_parse_from_their_full_hex_form() {
    let text = format!("0x000000{}", "07".repeat(29));
    let id: PeerId = text.parse().unwrap();
    assert_eq!(id.0[..4], [0, 0, 0, 7]);
    assert_eq!(id.0[31], 7);
    let full = format!("{:?}", PeerId::from_u64(9));
    let parsed: PeerId = full["PeerId(".len()..full.len() - 1].parse().unwrap();
    assert_eq!(parsed, PeerId::from_u64(9));
    assert!(
        "00000009".parse::<PeerId>().is_err(),
        "the short form is not an id"
    );
}
