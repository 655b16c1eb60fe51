//! The close, which is why this library exists: every accepted message is delivered, in order,
//! whoever starts the close; what cannot be delivered in time is counted exactly; exactly one
//! `Disconnected` per side.
//!
//! The audit scenario (queue many messages, close at once) runs [`rounds`] times for each way a
//! close can start: the application's `shutdown`, dropping the last handle, and the remote
//! closing while this side still has messages queued.

mod common;

use std::time::{Duration, Instant};

use common::*;
use syncpeer::proto::{FrameDecoder, MultiplexMessage, NetworkMessage};
use syncpeer::{
    Bytes, Delivery, DisconnectReason, Disconnected, DrainReport, Inbound, PeerConfig, PendingRpc,
    Responder, RpcError, SendError,
};

/// Repetitions of the audit scenario per initiator and transport (a quarter of them under
/// ThreadSanitizer, which slows each tenfold: `scripts/tsan.sh` sets `SYNCPEER_TSAN`).
fn rounds() -> u64 {
    if std::env::var_os("SYNCPEER_TSAN").is_some() {
        5
    } else {
        20
    }
}
/// Messages queued before each close.
const MESSAGES: u64 = 10_000;
const SIZE: usize = 16;

/// The reasons an application passes, varied across rounds.
const REASONS: [DisconnectReason; 3] = [
    DisconnectReason::RequestedByPeerManager,
    DisconnectReason::NetworkHealthCheckFailure,
    DisconnectReason::StaleConnection,
];

/// Every accepted message written, none abandoned.
#[track_caller]
fn assert_lossless(report: &DrainReport, accepted: u64, context: &str) {
    assert_eq!(report.messages_accepted, accepted, "{context}: {report:?}");
    assert_eq!(report.messages_written, accepted, "{context}: {report:?}");
    assert_eq!(report.messages_abandoned, 0, "{context}: {report:?}");
    assert_eq!(report.bytes_written, report.bytes_accepted, "{context}");
    assert!(report.is_clean());
    assert!(!report.aborted);
}

/// Receives exactly `n` numbered messages, in order from `from`, and nothing more.
#[track_caller]
fn assert_received_in_order(side: &Side, from: u64, n: u64, context: &str) {
    for i in from..n {
        match side.inbound.recv_timeout(WAIT) {
            Ok(m) => assert_eq!(index_of(m.data()), i, "{context}: order"),
            Err(e) => panic!("{context}: message {i} of {n} missing: {e}"),
        }
    }
    assert!(side.inbound.try_recv().is_err(), "{context}: extra message");
}

#[derive(Clone, Copy, Debug)]
enum Initiator {
    Shutdown,
    DropLastHandle,
    Remote,
}

/// One round; returns how many messages the remote delivered after its own close started.
fn audit_round(t: Transport, who: Initiator, round: u64) -> u64 {
    let context = format!("{t:?}, {who:?}, round {round}");
    let (a, b) = pair_with(t, PeerConfig::default(), MESSAGES as usize + 16);
    let reason = REASONS[round as usize % REASONS.len()];
    let Side {
        handle: ah,
        inbound: _a_inbound,
        disconnected: a_notices,
    } = a;
    let (a_notice, accepted) = match who {
        Initiator::Shutdown => {
            let report = within("send and shutdown", WAIT, move || {
                for i in 0..MESSAGES {
                    ah.send(DIRECT, numbered(i, SIZE)).unwrap();
                }
                ah.shutdown(reason).unwrap()
            });
            assert_eq!(report.reason, reason, "{context}");
            let notice = one_notice(&a_notices);
            assert_eq!(
                notice.report, report,
                "{context}: the notice carries the report"
            );
            (notice, MESSAGES)
        }
        Initiator::DropLastHandle => {
            within("send and drop", WAIT, move || {
                for i in 0..MESSAGES {
                    ah.send(DIRECT, numbered(i, SIZE)).unwrap();
                }
                drop(ah); // the last handle
            });
            let notice = one_notice(&a_notices);
            assert_eq!(notice.reason, DisconnectReason::RequestedByPeerManager);
            (notice, MESSAGES)
        }
        Initiator::Remote => {
            let h = ah.clone();
            let sender = std::thread::spawn(move || {
                for i in 0..MESSAGES {
                    if let Err(e) = h.send(DIRECT, numbered(i, SIZE)) {
                        // Refused only because the close started; the payload comes back.
                        let SendError::Closed(back) = e else {
                            panic!("unexpected {e:?}")
                        };
                        assert_eq!(index_of(&back), i);
                        return i;
                    }
                }
                MESSAGES
            });
            // Once traffic flows (A has a full outbox behind this), B closes.
            let first = b.inbound.recv_timeout(WAIT).expect("first message");
            assert_eq!(index_of(first.data()), 0);
            let hb = b.handle.clone();
            let b_report = within("remote shutdown", WAIT, move || {
                hb.shutdown(reason).unwrap()
            });
            assert_eq!(b_report.reason, reason, "{context}");
            let accepted = within("sender", WAIT, move || sender.join().unwrap());
            let notice = one_notice(&a_notices);
            assert_eq!(
                notice.reason,
                DisconnectReason::ConnectionClosed,
                "{context}"
            );
            assert_eq!(ah.join().unwrap(), notice.report);
            assert_received_in_order(&b, 1, accepted, &context);
            let b_notice = one_notice(&b.disconnected);
            assert_eq!(b_notice.report, b_report);
            assert_lossless(&notice.report, accepted, &context);
            return b_notice.report.delivered_during_drain;
        }
    };
    assert_eq!(a_notice.peer_id, syncpeer::PeerId::from_u64(2));
    assert_lossless(&a_notice.report, accepted, &context);
    assert_eq!(a_notice.report.bytes_accepted, accepted * SIZE as u64);
    assert_received_in_order(&b, 0, accepted, &context);
    let b_notice = one_notice(&b.disconnected);
    assert_eq!(
        b_notice.reason,
        DisconnectReason::ConnectionClosed,
        "{context}"
    );
    assert_lossless(&b_notice.report, 0, &context);
    b_notice.report.delivered_during_drain
}

#[test]
fn audit_close_by_shutdown_delivers_everything() {
    for t in TRANSPORTS {
        for round in 0..rounds() {
            assert_eq!(audit_round(t, Initiator::Shutdown, round), 0);
        }
    }
}

#[test]
fn audit_close_by_dropping_the_last_handle_delivers_everything() {
    for t in TRANSPORTS {
        for round in 0..rounds() {
            assert_eq!(audit_round(t, Initiator::DropLastHandle, round), 0);
        }
    }
}

#[test]
fn audit_close_by_the_remote_delivers_everything_queued() {
    for t in TRANSPORTS {
        let mut during_drain = 0;
        for round in 0..rounds() {
            during_drain += audit_round(t, Initiator::Remote, round);
        }
        // The scenario did what it says: A still had messages queued when B closed, and B
        // delivered them while closing (thousands per round in practice).
        assert!(
            during_drain > 0,
            "{t:?}: B never closed with messages in flight"
        );
    }
}

/// Messages sent to a remote that never reads: about 50 MiB, well past what the kernel
/// buffers and the peer's queues hold, but within the default outbox (so `send` never waits).
const STALL_MESSAGES: u64 = 800;
const STALL_SIZE: usize = 64 * 1024;

/// Sends [`STALL_MESSAGES`] with receipts to a remote that does not read.
fn fill_stalled(h: &syncpeer::PeerHandle) -> Vec<syncpeer::Receipt> {
    (0..STALL_MESSAGES)
        .map(|i| {
            h.send_with_receipt(DIRECT, numbered(i, STALL_SIZE))
                .unwrap()
        })
        .collect()
}

/// Checks the receipts against the report: written ones first, then abandoned ones.
#[track_caller]
fn check_receipts(receipts: &[syncpeer::Receipt], report: &DrainReport, context: &str) {
    let outcomes: Vec<Delivery> = receipts
        .iter()
        .map(|r| r.wait_timeout(WAIT).expect("every receipt resolves"))
        .collect();
    let written = outcomes.iter().filter(|d| **d == Delivery::Written).count() as u64;
    assert_eq!(
        written, report.messages_written,
        "{context}: written receipts"
    );
    assert_eq!(
        STALL_MESSAGES - written,
        report.messages_abandoned,
        "{context}: abandoned receipts"
    );
    assert!(
        outcomes[..written as usize]
            .iter()
            .all(|d| *d == Delivery::Written),
        "{context}: the written messages are the first ones"
    );
}

/// Reads what reached the raw end; returns how many whole messages it holds (in order).
fn count_delivered(raw: &mut Raw) -> u64 {
    let bytes = raw.read_to_eof();
    let mut decoder = FrameDecoder::new(PeerConfig::default().max_frame_size);
    decoder.extend(&bytes);
    let mut n = 0;
    while let Ok(Some(m)) = decoder.decode() {
        let MultiplexMessage::Message(NetworkMessage::DirectSendMsg(d)) = m else {
            panic!("unexpected frame {m:?}")
        };
        assert_eq!(index_of(&d.raw_msg), n, "delivered in order");
        n += 1;
    }
    n
}

#[test]
fn stalled_remote_close_is_bounded_by_linger_and_counts_abandoned() {
    let linger = Duration::from_secs(1);
    let config = PeerConfig {
        linger,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (socket, mut raw) = raw_pair(t);
        let (h, _, notices) = spawn_peer(socket, 9, config.clone(), &[]);
        let receipts = fill_stalled(&h);
        let start = Instant::now();
        let h2 = h.clone();
        let report = within("shutdown", linger + WAIT, move || {
            h2.shutdown(DisconnectReason::StaleConnection).unwrap()
        });
        let took = start.elapsed();
        let context = format!("{t:?}: {report:?}");
        assert!(
            took >= linger,
            "{context}: gave up before linger ({took:?})"
        );
        assert!(
            took < linger + Duration::from_secs(3),
            "{context}: took {took:?}"
        );
        assert_eq!(report.reason, DisconnectReason::StaleConnection);
        assert!(!report.aborted);
        assert_eq!(report.messages_accepted, STALL_MESSAGES, "{context}");
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            report.messages_accepted,
            "{context}"
        );
        assert_eq!(
            report.bytes_written + report.bytes_abandoned,
            report.bytes_accepted,
            "{context}"
        );
        assert!(report.messages_abandoned > 0, "{context}");
        check_receipts(&receipts, &report, &context);
        assert_eq!(one_notice(&notices).report, report);
        // "Written" means the remote can read it: every written message is there, whole.
        assert_eq!(count_delivered(&mut raw), report.messages_written, "{t:?}");
    }
}

#[test]
fn abort_with_a_stalled_remote_returns_promptly_and_cancels_rpcs() {
    let config = PeerConfig {
        linger: Duration::from_secs(10),
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (socket, raw) = raw_pair(t);
        let (h, _, notices) = spawn_peer(socket, 9, config.clone(), &[]);
        // Requests written (and waiting for a response) before the pipe clogs, and one
        // queued behind the clog.
        let early: Vec<_> = (0..3)
            .map(|_| h.rpc_start(RPC, Bytes::from_static(b"?"), WAIT).unwrap())
            .collect();
        // Written before the clog, as the checks below assume (the optimised test build once
        // queued all 800 messages and aborted before the writer had run at all).
        eventually("the early requests written", || {
            h.metrics().messages_written == 3
        });
        let receipts = fill_stalled(&h);
        let late = h.rpc_start(RPC, Bytes::from_static(b"?"), WAIT).unwrap();

        let start = Instant::now();
        let h2 = h.clone();
        let report = within("abort", WAIT, move || h2.abort().unwrap());
        let took = start.elapsed();
        let context = format!("{t:?}: {report:?}");
        assert!(
            took < Duration::from_secs(3),
            "{context}: abort took {took:?}"
        );
        assert!(report.aborted);
        assert_eq!(report.reason, DisconnectReason::RequestedByPeerManager);
        // The direct sends and the requests the mux admitted: the three early ones, and the
        // late one only if the mux got to it before the abort.
        let requests = h.metrics().rpc_requests_accepted;
        assert!(requests == 3 || requests == 4, "{context}");
        assert_eq!(
            report.messages_accepted,
            STALL_MESSAGES + requests,
            "{context}"
        );
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            report.messages_accepted,
            "{context}"
        );
        assert!(report.messages_abandoned > 0, "{context}");
        assert_eq!(report.rpcs_failed_at_close, 4, "{context}");
        for p in early.into_iter().chain([late]) {
            match p.wait_timeout(WAIT) {
                Err(Err(e)) => assert_eq!(e, RpcError::Cancelled, "{t:?}"),
                other => panic!("{t:?}: expected Cancelled, got {other:?}"),
            }
        }
        // Every receipt resolves; the abandoned ones are among those counted (the late request,
        // if admitted, is the only other message that can be abandoned).
        let abandoned = receipts
            .iter()
            .map(|r| r.wait_timeout(WAIT).expect("every receipt resolves"))
            .filter(|d| *d == Delivery::Abandoned)
            .count() as u64;
        assert!(abandoned > 0, "{context}");
        assert!(
            report.messages_abandoned - abandoned <= requests - 3,
            "{context}: {abandoned} abandoned receipts"
        );
        let notice = one_notice(&notices);
        assert!(notice.report.aborted);
        assert_eq!(notice.report, report);
        // Closing again changes nothing.
        assert_eq!(h.abort().unwrap(), report);
        assert_eq!(
            h.shutdown(DisconnectReason::StaleConnection).unwrap(),
            report
        );
        drop(raw);
    }
}

#[test]
fn abort_with_a_peer_remote_gives_one_notice_each() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        a.handle.send(DIRECT, Bytes::from_static(b"hello")).unwrap();
        assert_eq!(recv(&b).data(), &Bytes::from_static(b"hello"));
        let pending = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"?"), WAIT)
            .unwrap();
        let Inbound::Request { responder, .. } = recv(&b) else {
            panic!("expected a request")
        };
        let h = a.handle.clone();
        let report = within("abort", WAIT, move || h.abort().unwrap());
        // Unanswered, so that B's own close does not wait for it.
        drop(responder);
        assert!(report.aborted);
        assert_eq!((report.messages_written, report.messages_abandoned), (2, 0));
        assert_eq!(
            pending.wait_timeout(WAIT).err().map(|e| e.err()),
            Some(Some(RpcError::Cancelled))
        );
        let notice = one_notice(&a.disconnected);
        assert!(notice.report.aborted, "{t:?}");
        let b_notice: Disconnected = one_notice(&b.disconnected);
        assert!(
            matches!(
                b_notice.reason,
                DisconnectReason::ConnectionClosed | DisconnectReason::InputOutputError
            ),
            "{t:?}: {b_notice:?}"
        );
        assert!(!b_notice.report.aborted);
    }
}

/// A pair over `t` with `config`, A's RPC "q" in flight, and the request as B received it.
fn pending_rpc(t: Transport, config: PeerConfig) -> (Side, Side, PendingRpc, Bytes, Responder) {
    let (a, b) = pair_with(t, config, 64);
    let pending = a
        .handle
        .rpc_start(RPC, Bytes::from_static(b"q"), WAIT)
        .unwrap();
    match recv(&b) {
        Inbound::Request {
            data, responder, ..
        } => (a, b, pending, data, responder),
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn close_waits_for_the_answer_to_an_inbound_rpc() {
    for t in TRANSPORTS {
        let (a, b, pending, data, responder) = pending_rpc(t, PeerConfig::default());
        assert_eq!(&data[..], b"q");
        // B starts its close with A's request unanswered: its drain waits for the answer.
        let hb = b.handle.clone();
        let closing =
            std::thread::spawn(move || hb.shutdown(DisconnectReason::StaleConnection).unwrap());
        eventually("B closing", || b.handle.is_closed());
        assert!(
            b.handle.send(DIRECT, Bytes::from_static(b"no")).is_err(),
            "intake is closed"
        );
        responder
            .respond(Bytes::from_static(b"answered while closing"))
            .unwrap();
        let resp = pending
            .wait_timeout(WAIT)
            .expect("response during the drain");
        assert_eq!(&resp[..], b"answered while closing", "{t:?}");
        let b_report = within("B shutdown", WAIT, move || closing.join().unwrap());
        assert_lossless(&b_report, 1, &format!("{t:?} B"));
        assert_eq!(
            one_notice(&a.disconnected).reason,
            DisconnectReason::ConnectionClosed
        );
        one_notice(&b.disconnected);
    }
}

#[test]
fn close_waits_for_the_response_to_an_outbound_rpc() {
    for t in TRANSPORTS {
        let (a, b, pending, _, responder) = pending_rpc(t, PeerConfig::default());
        // A closes while waiting for B's answer: the answer still reaches the caller.
        let ha = a.handle.clone();
        let closing =
            std::thread::spawn(move || ha.shutdown(DisconnectReason::StaleConnection).unwrap());
        eventually("A closing", || a.handle.is_closed());
        responder
            .respond(Bytes::from_static(b"late but in linger"))
            .unwrap();
        let resp = pending
            .wait_timeout(WAIT)
            .expect("response during the drain");
        assert_eq!(&resp[..], b"late but in linger", "{t:?}");
        let report = within("A shutdown", WAIT, move || closing.join().unwrap());
        assert_eq!(report.rpcs_failed_at_close, 0, "{t:?}");
        assert_lossless(&report, 1, &format!("{t:?} A"));
        one_notice(&a.disconnected);
        assert_eq!(
            one_notice(&b.disconnected).reason,
            DisconnectReason::ConnectionClosed
        );
    }
}

#[test]
fn rpcs_unanswered_by_linger_fail_with_disconnected() {
    let linger = Duration::from_millis(300);
    let config = PeerConfig {
        linger,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b, pending, _, responder) = pending_rpc(t, config.clone());
        let h = a.handle.clone();
        let report = within("shutdown", WAIT, move || {
            h.shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap()
        });
        assert!(report.drain_duration >= linger, "{t:?}: {report:?}");
        assert_eq!(report.rpcs_failed_at_close, 1);
        assert_eq!(
            pending.wait_timeout(WAIT).err().map(|e| e.err()),
            Some(Some(RpcError::Disconnected)),
            "{t:?}"
        );
        let b_notice = one_notice(&b.disconnected);
        assert_eq!(b_notice.reason, DisconnectReason::ConnectionClosed);
        // B's side gave up on its inbound request at its own linger; the responder is stale.
        assert!(responder.respond(Bytes::from_static(b"!")).is_err());
        one_notice(&a.disconnected);
    }
}

#[test]
fn remote_close_does_not_wait_for_responses_that_cannot_come() {
    // Long enough that waiting it out would be obvious.
    let linger = Duration::from_secs(5);
    let config = PeerConfig {
        linger,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b, pending, _, responder) = pending_rpc(t, config.clone());
        drop(responder); // B will never answer
        let start = Instant::now();
        let hb = b.handle.clone();
        let b_report = within("B shutdown", WAIT, move || {
            hb.shutdown(DisconnectReason::StaleConnection).unwrap()
        });
        // Once B's EOF has reached A, no response can come: A's pending RPC fails at once
        // instead of holding both closes for A's linger.
        assert_eq!(
            pending.wait_timeout(WAIT).err().map(|e| e.err()),
            Some(Some(RpcError::Disconnected)),
            "{t:?}"
        );
        let took = start.elapsed();
        let a_notice = one_notice(&a.disconnected);
        assert_eq!(a_notice.reason, DisconnectReason::ConnectionClosed);
        assert_eq!(a_notice.report.rpcs_failed_at_close, 1);
        assert!(
            took < linger / 2,
            "{t:?}: closing took {took:?}: {b_report:?}"
        );
        one_notice(&b.disconnected);
    }
}

#[test]
fn concurrent_closes_share_one_report() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        a.handle.send(DIRECT, Bytes::from_static(b"x")).unwrap();
        let closers: Vec<_> = REASONS
            .iter()
            .map(|&reason| {
                let h = a.handle.clone();
                std::thread::spawn(move || h.shutdown(reason).unwrap())
            })
            .collect();
        let reports = within("shutdowns", WAIT, move || {
            closers
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>()
        });
        // The first reason wins, for everyone.
        assert!(REASONS.contains(&reports[0].reason));
        assert!(
            reports.iter().all(|r| *r == reports[0]),
            "{t:?}: {reports:?}"
        );
        assert_lossless(&reports[0], 1, &format!("{t:?}"));
        assert_eq!(one_notice(&a.disconnected).report, reports[0]);
        assert_eq!(recv(&b).data(), &Bytes::from_static(b"x"));
        one_notice(&b.disconnected);
    }
}

/// A `Disconnected` notice waits for a slow receiver instead of being dropped: twelve
/// connections share a channel of capacity 1 read every 60 ms, with a `linger` of 50 ms (the
/// notices were once given up after `linger`: 7 of 12 lost).
#[test]
fn notices_reach_a_slow_receiver() {
    const PEERS: u64 = 12;
    let config = PeerConfig {
        linger: Duration::from_millis(50),
        ..PeerConfig::default()
    };
    let (dtx, notices) = crossbeam_channel::bounded(1);
    let mut handles = Vec::new();
    for i in 0..PEERS {
        let (a, b) = unix_pair();
        let peer = a
            .builder()
            .config(config.clone())
            .remote_peer_id(syncpeer::PeerId::from_u64(i))
            .on_disconnect(dtx.clone())
            .spawn()
            .unwrap();
        handles.push((peer, b));
    }
    drop(dtx);
    for (peer, _) in &handles {
        peer.close(DisconnectReason::RequestedByPeerManager);
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < PEERS as usize {
        std::thread::sleep(Duration::from_millis(60));
        let notice = notices.recv_timeout(WAIT).expect("every notice arrives");
        assert!(seen.insert(notice.peer_id), "one notice per peer");
    }
    drop(handles);
    assert!(notices.recv_timeout(WAIT).is_err(), "no more notices");
}
