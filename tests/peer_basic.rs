//! Direct sends, RPCs and disconnects over loopback TCP and Unix socket pairs.

mod common;

use std::time::Duration;

use common::*;
use syncpeer::{Bytes, DisconnectReason, Inbound, PeerConfig};

#[test]
fn direct_sends_arrive_in_order_both_ways() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 1024);
        for i in 0..100u32 {
            a.handle
                .send(DIRECT, Bytes::from(i.to_be_bytes().to_vec()))
                .unwrap();
            b.handle
                .send(DIRECT, Bytes::from((1000 + i).to_be_bytes().to_vec()))
                .unwrap();
        }
        for i in 0..100u32 {
            match recv(&b) {
                Inbound::Message {
                    from,
                    protocol,
                    data,
                } => {
                    assert_eq!(
                        from,
                        syncpeer::PeerId::from_u64(1),
                        "b names a as its remote"
                    );
                    assert_eq!(protocol, DIRECT);
                    assert_eq!(&data[..], i.to_be_bytes(), "{t:?}");
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(&recv(&a).data()[..], (1000 + i).to_be_bytes());
        }
        let report = a
            .handle
            .shutdown(DisconnectReason::RequestedByPeerManager)
            .unwrap();
        assert_eq!(report.messages_accepted, 100);
        assert_eq!(report.messages_written, 100);
        assert!(report.is_clean());
        let da = disconnected(&a);
        assert_eq!(da.reason, DisconnectReason::RequestedByPeerManager);
        let db = disconnected(&b);
        assert_eq!(db.reason, DisconnectReason::ConnectionClosed);
        assert_eq!(db.report.messages_written, 100);
    }
}

#[test]
fn rpc_round_trip() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 1024);
        let server = std::thread::spawn(move || {
            for _ in 0..10 {
                match recv(&b) {
                    Inbound::Request {
                        data, responder, ..
                    } => {
                        let mut v = data.to_vec();
                        v.reverse();
                        responder.respond(v.into()).unwrap();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            b
        });
        for i in 0..10u8 {
            let resp = a
                .handle
                .rpc(RPC, Bytes::from(vec![i, 1, 2]), Duration::from_secs(10))
                .unwrap();
            assert_eq!(&resp[..], [2, 1, i]);
        }
        let b = server.join().unwrap();
        drop(a);
        assert_eq!(disconnected(&b).reason, DisconnectReason::ConnectionClosed);
    }
}

#[test]
fn keyed_handler_receives_and_counts_drops() {
    use syncpeer::keyed::{self, QueueStyle};
    init_logging();
    let (sa, sb) = tcp_pair();
    let (ktx, krx) = keyed::channel(QueueStyle::Klast, 3).unwrap();
    let (dtx, drx) = crossbeam_channel::unbounded();
    let b = sb
        .builder()
        .remote_peer_id(syncpeer::PeerId::from_u64(1))
        .handler(DIRECT, ktx)
        .on_disconnect(dtx)
        .spawn()
        .unwrap();
    let a = spawn_side(sa, 1, 2, PeerConfig::default(), 16);
    for i in 0..5u8 {
        let receipt = a
            .handle
            .send_with_receipt(DIRECT, Bytes::from(vec![i]))
            .unwrap();
        assert_eq!(
            receipt.wait_timeout(WAIT),
            Some(syncpeer::Delivery::Written)
        );
    }
    // Wait until B has handled all five: three delivered, and two that evicted older ones
    // (each a drop, not a delivery: the queue holds three, as before the push).
    let deadline = std::time::Instant::now() + WAIT;
    while b.metrics().direct_sends_delivered + b.metrics().dropped_handler_full < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "b never handled 5 messages"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.metrics().direct_sends_delivered, 3);
    assert_eq!(b.metrics().dropped_handler_full, 2);
    let got: Vec<u8> = (0..3)
        .map(|_| {
            let (key, msg) = krx.recv_timeout(WAIT).unwrap();
            assert_eq!(key, (syncpeer::PeerId::from_u64(1), DIRECT));
            msg.data()[0]
        })
        .collect();
    assert_eq!(got, [2, 3, 4], "KLAST keeps the last three");
    drop(a);
    assert_eq!(
        drx.recv_timeout(WAIT).unwrap().reason,
        DisconnectReason::ConnectionClosed
    );
}

/// The writer falls behind (the remote pauses reading), so batches wait in the mux while more
/// frames are encoded behind them: every frame must still reach the wire, intact and in order.
#[test]
fn backlog_behind_a_slow_reader_arrives_intact() {
    use std::io::Read;
    let (sock, raw) = raw_pair(Transport::Tcp);
    let peer = sock.builder().spawn().unwrap();
    const N: u32 = 50_000;
    let reader = std::thread::spawn(move || {
        let mut raw = raw;
        raw.set_read_timeout(WAIT);
        std::thread::sleep(Duration::from_millis(300));
        let mut decoder = syncpeer::proto::FrameDecoder::new(4 << 20);
        let mut buf = vec![0; 1 << 16];
        let mut next = 0u32;
        while next < N {
            let n = raw.read(&mut buf).expect("read before the timeout");
            assert!(n > 0, "eof after {next} frames");
            decoder.extend(&buf[..n]);
            while let Some(frame) = decoder.decode().expect("well-formed frame") {
                let syncpeer::proto::MultiplexMessage::Message(
                    syncpeer::proto::NetworkMessage::DirectSendMsg(m),
                ) = frame
                else {
                    panic!("unexpected frame {frame:?}")
                };
                assert_eq!(m.raw_msg[..4], next.to_be_bytes());
                next += 1;
            }
        }
        next
    });
    let payload = |i: u32| {
        let mut v = vec![0u8; 200];
        v[..4].copy_from_slice(&i.to_be_bytes());
        Bytes::from(v)
    };
    let mut receipts = Vec::new();
    for i in 0..N {
        if i % 1000 == 0 {
            receipts.push(peer.send_with_receipt(DIRECT, payload(i)).unwrap());
        } else {
            peer.send(DIRECT, payload(i)).unwrap();
        }
    }
    for r in receipts {
        assert_eq!(r.wait_timeout(WAIT), Some(syncpeer::Delivery::Written));
    }
    assert_eq!(reader.join().unwrap(), N);
    let report = peer
        .shutdown(DisconnectReason::RequestedByPeerManager)
        .unwrap();
    assert_eq!(report.messages_written, u64::from(N));
    assert!(report.is_clean());
}

/// `Duration::MAX`, a common way to say "no limit", is accepted for every timeout and panics
/// no thread: each deadline computed from it saturates.
#[test]
fn duration_max_means_no_limit_everywhere() {
    let config = PeerConfig {
        linger: Duration::MAX,
        inbound_rpc_timeout: Duration::MAX,
        write_timeout: Duration::MAX,
        spin: Duration::MAX,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, config.clone(), 16);
        let server = std::thread::spawn(move || {
            let Inbound::Request {
                data, responder, ..
            } = recv(&b)
            else {
                panic!("expected a request");
            };
            responder.respond(data).unwrap();
            let m = recv(&b);
            assert_eq!(&m.data()[..], b"then this");
            b
        });
        let reply = a
            .handle
            .rpc(RPC, Bytes::from_static(b"ping"), Duration::MAX)
            .unwrap();
        assert_eq!(&reply[..], b"ping");
        a.handle
            .send_timeout(DIRECT, Bytes::from_static(b"then this"), Duration::MAX)
            .unwrap();
        let b = within("server", WAIT, move || server.join().unwrap());
        let h = a.handle.clone();
        let report = within("shutdown", WAIT, move || {
            h.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        assert!(report.is_clean(), "{t:?}: {report:?}");
        assert_eq!(report.messages_written, 2);
        assert_eq!(disconnected(&b).reason, DisconnectReason::ConnectionClosed);
    }
}
