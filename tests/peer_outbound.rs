//! The sending side of the handle: backpressure (`try_send` / `send_timeout` hand the payload
//! back), receipts, refusals after a close and over `max_message_size`.

mod common;

use std::time::Duration;

use common::*;
use syncpeer::{
    Bytes, Delivery, DisconnectReason, Inbound, PeerConfig, RespondError, RpcError, SendError,
    SendTimeoutError, TrySendError,
};

/// Size of each message used to fill a stalled connection.
const CHUNK: usize = 64 * 1024;
/// Upper bound on what the pipeline can absorb before `send` backs up: kernel buffers, the
/// batch the writer holds, the frames channel's batch and the outbox hold a few tens of MiB.
const MAX_FILL: usize = 256 << 20;

/// True if `a` is the very buffer `b` (handed back, not copied).
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

#[test]
fn full_outbox_hands_the_payload_back() {
    const OUTBOX: usize = 4;
    for t in TRANSPORTS {
        // The remote is a raw socket that never reads: once the kernel buffers and the queues
        // behind them are full, the outbox stays full.
        let (socket, raw) = raw_pair(t);
        let config = PeerConfig {
            outbox_capacity: OUTBOX,
            ..PeerConfig::default()
        };
        let (h, _, notices) = spawn_peer(socket, 9, config, &[]);
        let payload = Bytes::from(vec![7u8; CHUNK]);

        let mut accepted = 0u64;
        loop {
            assert!(
                (accepted as usize) * CHUNK < MAX_FILL,
                "{t:?}: the outbox never backed up"
            );
            match h.send_timeout(DIRECT, payload.clone(), Duration::from_millis(200)) {
                Ok(()) => accepted += 1,
                Err(SendTimeoutError::Timeout(back)) => {
                    assert!(
                        same_buffer(&back, &payload),
                        "timeout hands the payload back"
                    );
                    break;
                }
                Err(e) => panic!("{t:?}: unexpected {e:?}"),
            }
        }
        // Stalled now: the outbox is full and stays full.
        match h.try_send(DIRECT, payload.clone()) {
            Err(TrySendError::Full(back)) => assert!(same_buffer(&back, &payload)),
            other => panic!("{t:?}: expected Full, got {other:?}"),
        }
        match h.send_timeout(DIRECT, payload.clone(), Duration::from_millis(20)) {
            Err(SendTimeoutError::Timeout(back)) => assert!(same_buffer(&back, &payload)),
            other => panic!("{t:?}: expected Timeout, got {other:?}"),
        }
        // The outbox holds `outbox_capacity` messages behind the batches the mux and the writer hold.
        assert_eq!(h.metrics().outbox_depth, OUTBOX as u64, "{t:?}");
        assert_eq!(h.metrics().messages_accepted, accepted, "{t:?}");

        let h2 = h.clone();
        let report = within("abort", WAIT, move || h2.abort().unwrap());
        assert!(report.aborted);
        assert_eq!(report.messages_accepted, accepted, "{t:?}");
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            accepted,
            "{t:?}: one outcome per accepted message"
        );
        assert!(
            report.messages_abandoned >= OUTBOX as u64,
            "{t:?}: {report:?}"
        );
        assert_eq!(one_notice(&notices).report, report);
        drop(raw);
    }
}

#[test]
fn receipt_resolves_written_after_delivery() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        // A small message and a streamed one (over one 4 MiB frame).
        let small = Bytes::from_static(b"receipt please");
        let large = pattern(9 << 20, 3);
        let r_small = a.handle.send_with_receipt(DIRECT, small.clone()).unwrap();
        let r_large = a.handle.send_with_receipt(DIRECT, large.clone()).unwrap();
        assert_eq!(recv(&b).data(), &small);
        let got = recv(&b);
        assert_eq!(got.data().len(), large.len());
        assert_eq!(checksum(got.data()), checksum(&large), "{t:?}");
        assert_eq!(r_small.wait_timeout(WAIT), Some(Delivery::Written));
        assert_eq!(r_large.wait_timeout(WAIT), Some(Delivery::Written));
        assert_eq!(r_large.try_get(), None, "a receipt resolves once");
        let m = a.handle.metrics();
        assert_eq!((m.messages_written, m.bytes_written), (2, 14 + (9 << 20)));
    }
}

#[test]
fn every_send_is_refused_after_shutdown_with_the_payload() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        a.handle
            .send(DIRECT, Bytes::from_static(b"before"))
            .unwrap();
        let h = a.handle.clone();
        let report = within("shutdown", WAIT, move || {
            h.shutdown(DisconnectReason::StaleConnection).unwrap()
        });
        assert_eq!(report.reason, DisconnectReason::StaleConnection);
        assert_eq!(report.messages_written, 1);
        assert!(a.handle.is_closed());

        let p = Bytes::from(vec![1u8; 100]);
        match a.handle.send(DIRECT, p.clone()) {
            Err(SendError::Closed(back)) => assert!(same_buffer(&back, &p)),
            other => panic!("{t:?}: send after close: {other:?}"),
        }
        match a.handle.try_send(DIRECT, p.clone()) {
            Err(TrySendError::Closed(back)) => assert!(same_buffer(&back, &p)),
            other => panic!("{t:?}: try_send after close: {other:?}"),
        }
        match a.handle.send_timeout(DIRECT, p.clone(), SHORT) {
            Err(SendTimeoutError::Closed(back)) => assert!(same_buffer(&back, &p)),
            other => panic!("{t:?}: send_timeout after close: {other:?}"),
        }
        match a.handle.send_with_receipt(DIRECT, p.clone()) {
            Err(SendError::Closed(back)) => assert!(same_buffer(&back, &p)),
            other => panic!("{t:?}: send_with_receipt after close: {other:?}"),
        }
        assert_eq!(
            a.handle.rpc_start(RPC, p.clone(), WAIT).err(),
            Some(RpcError::Disconnected)
        );
        assert_eq!(
            a.handle.rpc(RPC, p.clone(), WAIT),
            Err(RpcError::Disconnected)
        );
        // Nothing refused was counted, and the report is stable.
        assert_eq!(a.handle.metrics().messages_accepted, 1);
        assert_eq!(a.handle.join().unwrap(), report);
        assert_eq!(recv(&b).data(), &Bytes::from_static(b"before"));
        assert_eq!(
            one_notice(&b.disconnected).reason,
            DisconnectReason::ConnectionClosed
        );
    }
}

#[test]
fn messages_over_max_message_size_are_refused_with_the_payload() {
    const MAX: usize = 16 * 1024;
    let config = PeerConfig {
        max_frame_size: 4096,
        max_message_size: MAX,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, config.clone(), 64);
        let over = Bytes::from(vec![5u8; MAX + 1]);
        match a.handle.send(DIRECT, over.clone()) {
            Err(SendError::TooLarge(back)) => assert!(same_buffer(&back, &over)),
            other => panic!("{t:?}: {other:?}"),
        }
        match a.handle.try_send(DIRECT, over.clone()) {
            Err(TrySendError::TooLarge(back)) => assert!(same_buffer(&back, &over)),
            other => panic!("{t:?}: {other:?}"),
        }
        match a.handle.send_timeout(DIRECT, over.clone(), SHORT) {
            Err(SendTimeoutError::TooLarge(back)) => assert!(same_buffer(&back, &over)),
            other => panic!("{t:?}: {other:?}"),
        }
        match a.handle.send_with_receipt(DIRECT, over.clone()) {
            Err(SendError::TooLarge(back)) => assert!(same_buffer(&back, &over)),
            other => panic!("{t:?}: {other:?}"),
        }
        assert_eq!(
            a.handle.rpc_start(RPC, over.clone(), WAIT).err(),
            Some(RpcError::TooLarge)
        );
        assert_eq!(a.handle.metrics().messages_accepted, 0);

        // Exactly the limit is fine: streamed in 4 KiB frames and reassembled intact.
        let max = pattern(MAX, 11);
        a.handle.send(DIRECT, max.clone()).unwrap();
        let got = recv(&b);
        assert_eq!(checksum(got.data()), checksum(&max), "{t:?}");

        // A response over the limit cannot be sent either (documented as `Disconnected`);
        // the caller times out.
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"q"), SHORT));
        let Inbound::Request { responder, .. } = recv(&b) else {
            panic!("expected a request")
        };
        assert_eq!(
            responder.respond(over.clone()),
            Err(RespondError::Disconnected)
        );
        let result = within("rpc", WAIT, move || caller.join().unwrap());
        assert_eq!(result, Err(RpcError::TimedOut));
    }
}

/// Fills a connection whose remote never reads until `send_timeout` backs up; returns how many
/// messages were accepted.
fn fill_until_stalled(h: &syncpeer::PeerHandle, payload: &Bytes) -> u64 {
    let mut accepted = 0u64;
    loop {
        assert!(
            (accepted as usize) * CHUNK < MAX_FILL,
            "the outbox never backed up"
        );
        match h.send_timeout(DIRECT, payload.clone(), Duration::from_millis(200)) {
            Ok(()) => accepted += 1,
            Err(SendTimeoutError::Timeout(_)) => return accepted,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn blocked_send_is_woken_by_the_close_with_its_payload() {
    let config = PeerConfig {
        outbox_capacity: 4,
        linger: Duration::from_millis(300),
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (socket, raw) = raw_pair(t);
        let (h, _, notices) = spawn_peer(socket, 9, config.clone(), &[]);
        let payload = Bytes::from(vec![3u8; CHUNK]);
        let accepted = fill_until_stalled(&h, &payload);
        let (h2, p2) = (h.clone(), payload.clone());
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let blocked = std::thread::spawn(move || {
            started_tx.send(()).unwrap();
            h2.send(DIRECT, p2)
        });
        started_rx.recv_timeout(WAIT).unwrap();
        // A window: let the sender reach its wait on the full outbox.
        std::thread::sleep(Duration::from_millis(50));
        let h3 = h.clone();
        let report = within("shutdown", WAIT, move || {
            h3.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        match within("blocked send", WAIT, move || blocked.join().unwrap()) {
            Err(SendError::Closed(back)) => assert!(same_buffer(&back, &payload), "{t:?}"),
            other => panic!("{t:?}: expected Closed, got {other:?}"),
        }
        assert_eq!(report.messages_accepted, accepted, "{t:?}");
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            accepted
        );
        one_notice(&notices);
        drop(raw);
    }
}

#[test]
fn no_write_progress_for_write_timeout_closes_with_io_error() {
    let write_timeout = Duration::from_millis(300);
    let config = PeerConfig {
        outbox_capacity: 4,
        write_timeout,
        linger: Duration::from_millis(300),
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (socket, raw) = raw_pair(t);
        let (h, _, notices) = spawn_peer(socket, 9, config.clone(), &[]);
        let payload = Bytes::from(vec![4u8; CHUNK]);
        // Fill until the write timeout has closed the connection by itself.
        let mut accepted = 0u64;
        let closed = loop {
            assert!(
                (accepted as usize) * CHUNK < MAX_FILL,
                "{t:?}: never stalled"
            );
            match h.send_timeout(DIRECT, payload.clone(), WAIT) {
                Ok(()) => accepted += 1,
                Err(SendTimeoutError::Closed(back)) => break back,
                Err(e) => panic!("{t:?}: unexpected {e:?}"),
            }
        };
        assert!(same_buffer(&closed, &payload));
        let notice = one_notice(&notices);
        assert_eq!(notice.reason, DisconnectReason::InputOutputError, "{t:?}");
        let report = notice.report;
        assert_eq!(report.messages_accepted, accepted, "{t:?}: {report:?}");
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            accepted
        );
        assert!(report.messages_abandoned > 0, "{t:?}: {report:?}");
        drop(raw);
    }
}
