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
        let report = a.handle.shutdown(DisconnectReason::RequestedByPeerManager);
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
