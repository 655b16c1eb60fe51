//! Outbound and inbound RPCs over loopback: concurrent matching, timeouts, late responses,
//! cancellation, the concurrency limit, and responders that answer late or not at all.

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::{Receiver, never, select};
use syncpeer::{Bytes, Inbound, PeerConfig, RespondError, Responder, RpcError};

/// Client threads per side in the concurrent test, and RPCs per thread.
const RPC_THREADS: usize = 4;
const RPCS_PER_THREAD: usize = 50;

/// Slack for a timer to fire on a loaded two-core machine.
const TIMER_SLACK: Duration = Duration::from_secs(2);

/// Answers `n` requests with `tag ‖ request`. Answers whatever has queued up in reverse order,
/// so responses routinely overtake each other.
fn serve(rx: Receiver<Inbound>, n: usize, tag: u8) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut answered = 0;
        while answered < n {
            let mut batch = vec![rx.recv_timeout(WAIT).expect("request in time")];
            batch.extend(rx.try_iter());
            for m in batch.into_iter().rev() {
                let Inbound::Request {
                    data, responder, ..
                } = m
                else {
                    panic!("expected a request, got {m:?}")
                };
                let mut v = vec![tag];
                v.extend_from_slice(&data);
                responder.respond(v.into()).expect("respond in time");
                answered += 1;
            }
        }
    })
}

/// Receives one request, or fails.
#[track_caller]
fn request(side: &Side) -> (Bytes, Responder) {
    match recv(side) {
        Inbound::Request {
            data, responder, ..
        } => (data, responder),
        other => panic!("expected a request, got {other:?}"),
    }
}

/// A calls B once more and B answers with `answer` at once; the call must succeed with it.
#[track_caller]
fn one_more_rpc_answered(a: &Side, b: &Side, answer: &'static [u8]) {
    let h = a.handle.clone();
    let next = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"next"), WAIT));
    let (_, responder) = request(b);
    responder.respond(Bytes::from_static(answer)).unwrap();
    let result = within("rpc", WAIT, move || next.join().unwrap());
    assert_eq!(result.as_deref(), Ok(answer));
}

#[test]
fn concurrent_rpcs_both_ways_are_matched() {
    const N: usize = RPC_THREADS * RPCS_PER_THREAD;
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 1024);
        let servers = vec![
            serve(a.inbound.clone(), N, b'A'),
            serve(b.inbound.clone(), N, b'B'),
        ];
        let mut clients = Vec::new();
        for (side, name, server) in [(&a, 'a', b'B'), (&b, 'b', b'A')] {
            for thread in 0..RPC_THREADS {
                let h = side.handle.clone();
                clients.push(std::thread::spawn(move || {
                    for i in 0..RPCS_PER_THREAD {
                        let req = format!("{name}-{thread}-{i}").into_bytes();
                        let resp = h.rpc(RPC, req.clone().into(), WAIT).expect("rpc");
                        assert_eq!(resp[0], server);
                        assert_eq!(&resp[1..], &req[..], "response matched to its request");
                    }
                }));
            }
        }
        within("clients and servers", WAIT, move || {
            for c in clients.into_iter().chain(servers) {
                c.join().unwrap();
            }
        });
        for side in [&a, &b] {
            // Callers are answered by the reader; the mux counts each completion just after.
            eventually("every rpc counted", || {
                side.handle.metrics().rpcs_succeeded == N as u64
            });
            let m = side.handle.metrics();
            assert_eq!(m.rpcs_succeeded, N as u64, "{t:?}");
            assert_eq!(m.rpc_requests_accepted, N as u64);
            assert_eq!(m.inbound_rpcs_answered, N as u64);
            assert_eq!(m.rpc_responses_accepted, N as u64);
            assert_eq!(m.unknown_responses + m.rpcs_timed_out + m.rpcs_refused, 0);
        }
    }
}

#[test]
fn rpc_times_out_and_the_late_response_is_ignored() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let h = a.handle.clone();
        let result = within("rpc", WAIT, move || {
            h.rpc(RPC, Bytes::from_static(b"slow"), timeout)
        });
        let elapsed = start.elapsed();
        assert_eq!(result, Err(RpcError::TimedOut), "{t:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + TIMER_SLACK,
            "{t:?}: timed out after {elapsed:?}"
        );

        // The server answers late; its side still accepts the answer (its own deadline is
        // 10 s), and the caller's side ignores it.
        let (data, late) = request(&b);
        assert_eq!(&data[..], b"slow");
        late.respond(Bytes::from_static(b"too late")).unwrap();
        // The reader sees responses in wire order: once the next RPC completes, the late one
        // has been handed to the mux, which counts it a moment later.
        one_more_rpc_answered(&a, &b, b"on time");
        eventually("the late response counted", || {
            let m = a.handle.metrics();
            m.unknown_responses == 1 && m.rpcs_succeeded == 1
        });
        let m = a.handle.metrics();
        assert_eq!(m.unknown_responses, 1, "{t:?}");
        assert_eq!((m.rpcs_timed_out, m.rpcs_succeeded), (1, 1));
        assert!(!a.handle.is_closed() && !b.handle.is_closed());
    }
}

#[test]
fn pending_rpc_receiver_works_in_select() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        let timeout = Duration::from_millis(300);

        // Held as a PendingRpc, waited on through its receiver next to another channel.
        let start = Instant::now();
        let pending = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"x"), timeout)
            .unwrap();
        let unrelated: Receiver<()> = never();
        select! {
            recv(pending.receiver()) -> r => assert_eq!(r, Ok(Err(RpcError::TimedOut)), "{t:?}"),
            recv(unrelated) -> _ => unreachable!(),
            default(WAIT) => panic!("{t:?}: no outcome in select"),
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= timeout && elapsed < timeout + TIMER_SLACK,
            "{elapsed:?}"
        );

        // Only a clone of the receiver is held: the outcome still arrives, exactly once.
        let pending = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"y"), timeout)
            .unwrap();
        let rx = pending.receiver().clone();
        drop(pending);
        select! {
            recv(rx) -> r => assert_eq!(r, Ok(Err(RpcError::TimedOut)), "{t:?}"),
            default(WAIT) => panic!("{t:?}: no outcome for a receiver held alone"),
        }
        assert!(rx.recv_timeout(SHORT).is_err(), "exactly one outcome");

        // And an answered one arrives through the receiver too.
        let pending = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"z"), WAIT)
            .unwrap();
        for _ in 0..2 {
            drop(request(&b)); // the two unanswered ones
        }
        let (data, responder) = request(&b);
        assert_eq!(&data[..], b"z");
        responder.respond(Bytes::from_static(b"Z")).unwrap();
        select! {
            recv(pending.receiver()) -> r => assert_eq!(r, Ok(Ok(Bytes::from_static(b"Z")))),
            default(WAIT) => panic!("{t:?}: no response"),
        }
    }
}

#[test]
fn cancelled_rpc_frees_its_slot_and_its_late_response_is_ignored() {
    let config = PeerConfig {
        max_concurrent_outbound_rpcs: 1,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, config.clone(), 64);
        let first = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"1"), WAIT)
            .unwrap();
        let (_, r1) = request(&b);
        drop(first); // the caller gives up
        // At the limit of one, the cancelled RPC makes room for the next.
        let second = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"2"), WAIT)
            .unwrap();
        let (data, r2) = request(&b);
        assert_eq!(&data[..], b"2");
        r1.respond(Bytes::from_static(b"late 1")).unwrap();
        r2.respond(Bytes::from_static(b"answer 2")).unwrap();
        match second.wait_timeout(WAIT) {
            Ok(resp) => assert_eq!(&resp[..], b"answer 2", "{t:?}"),
            Err(e) => panic!("{t:?}: {e:?}"),
        }
        // The reader answers the caller itself; the mux's counters trail it by a moment.
        eventually("the late response is counted as unknown", || {
            let m = a.handle.metrics();
            m.unknown_responses == 1 && m.rpcs_succeeded == 1
        });
        let m = a.handle.metrics();
        assert_eq!(m.rpcs_cancelled, 1, "{t:?}");
        assert_eq!(
            m.unknown_responses, 1,
            "{t:?}: the late response was ignored"
        );
        assert_eq!(m.rpcs_succeeded, 1);

        // Under the limit, a dropped PendingRpc's response goes nowhere and breaks nothing.
        let third = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"3"), WAIT)
            .unwrap();
        let (_, r3) = request(&b);
        drop(third);
        r3.respond(Bytes::from_static(b"nobody listens")).unwrap();
        let h = a.handle.clone();
        let fourth = std::thread::spawn(move || h.rpc(RPC, Bytes::from_static(b"4"), WAIT));
        let (_, r4) = request(&b);
        r4.respond(Bytes::from_static(b"4!")).unwrap();
        let result = within("rpc", WAIT, move || fourth.join().unwrap());
        assert_eq!(result.as_deref(), Ok(&b"4!"[..]), "{t:?}");
    }
}

#[test]
fn outbound_rpcs_over_the_limit_fail_with_too_many_pending() {
    const LIMIT: usize = 2;
    let config = PeerConfig {
        max_concurrent_outbound_rpcs: LIMIT,
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, config.clone(), 64);
        let p1 = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"1"), WAIT)
            .unwrap();
        let p2 = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"2"), WAIT)
            .unwrap();
        let p3 = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"3"), WAIT)
            .unwrap();
        match p3.wait_timeout(WAIT) {
            Err(Err(e)) => assert_eq!(e, RpcError::TooManyPending(LIMIT), "{t:?}"),
            other => panic!("{t:?}: expected TooManyPending, got {other:?}"),
        }
        let h = a.handle.clone();
        let blocking = within("rpc", WAIT, move || {
            h.rpc(RPC, Bytes::from_static(b"4"), WAIT)
        });
        assert_eq!(blocking, Err(RpcError::TooManyPending(LIMIT)));
        assert_eq!(a.handle.metrics().rpcs_refused, 2);

        // Only the two admitted requests went out.
        let (d1, r1) = request(&b);
        let (d2, r2) = request(&b);
        assert_eq!((&d1[..], &d2[..]), (&b"1"[..], &b"2"[..]));
        assert!(
            b.inbound.recv_timeout(SHORT).is_err(),
            "a refused rpc was sent"
        );
        r2.respond(Bytes::from_static(b"two")).unwrap();
        r1.respond(Bytes::from_static(b"one")).unwrap();
        assert_eq!(p1.wait_timeout(WAIT).ok().as_deref(), Some(&b"one"[..]));
        assert_eq!(p2.wait_timeout(WAIT).ok().as_deref(), Some(&b"two"[..]));

        // Room again.
        let p5 = a
            .handle
            .rpc_start(RPC, Bytes::from_static(b"5"), WAIT)
            .unwrap();
        let (_, r5) = request(&b);
        r5.respond(Bytes::from_static(b"five")).unwrap();
        assert_eq!(p5.wait_timeout(WAIT).ok().as_deref(), Some(&b"five"[..]));
    }
}

#[test]
fn late_responder_is_refused_and_sends_nothing() {
    let server_config = PeerConfig {
        inbound_rpc_timeout: Duration::from_millis(200),
        ..PeerConfig::default()
    };
    for t in TRANSPORTS {
        let (a_sock, b_sock) = sockets(t);
        let a = spawn_side(a_sock, 1, 2, PeerConfig::default(), 64);
        let b = spawn_side(b_sock, 2, 1, server_config.clone(), 64);
        // The caller waits longer than the server's inbound timeout: had anything been sent,
        // it would have arrived in time.
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || {
            h.rpc(RPC, Bytes::from_static(b"q"), Duration::from_millis(1000))
        });
        let (_, responder) = request(&b);
        let deadline = responder.deadline();
        // A window: let the server's deadline pass.
        std::thread::sleep(
            deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(20),
        );
        assert_eq!(
            responder.respond(Bytes::from_static(b"too late")),
            Err(RespondError::TimedOut),
            "{t:?}"
        );
        let result = within("rpc", WAIT, move || caller.join().unwrap());
        assert_eq!(result, Err(RpcError::TimedOut), "{t:?}");

        // The connection works; the late answer was never written.
        one_more_rpc_answered(&a, &b, b"ok");
        let mb = b.handle.metrics();
        assert_eq!(mb.rpc_responses_accepted, 1, "{t:?}");
        assert_eq!(
            (mb.inbound_rpcs_answered, mb.inbound_rpcs_unanswered),
            (1, 1)
        );
        assert_eq!(a.handle.metrics().unknown_responses, 0);
    }
}

#[test]
fn dropped_responder_sends_nothing() {
    for t in TRANSPORTS {
        let (a, b) = pair_with(t, PeerConfig::default(), 64);
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || {
            h.rpc(RPC, Bytes::from_static(b"q"), Duration::from_millis(300))
        });
        let (_, responder) = request(&b);
        drop(responder);
        let result = within("rpc", WAIT, move || caller.join().unwrap());
        assert_eq!(result, Err(RpcError::TimedOut), "{t:?}");

        // Replies are handled in order: once the next answer is through, the drop was seen.
        one_more_rpc_answered(&a, &b, b"ok");
        let mb = b.handle.metrics();
        assert_eq!(
            (mb.rpc_responses_accepted, mb.inbound_rpcs_unanswered),
            (1, 1)
        );
        assert_eq!(a.handle.metrics().unknown_responses, 0, "{t:?}");
    }
}

/// Every response `respond` accepted has one outcome in the report, even when an abort follows
/// at once: written, or abandoned (they once vanished from the report when the abort came
/// before the mux had taken them).
#[test]
fn responses_accepted_before_an_abort_are_in_its_report() {
    use std::io::Write;
    use syncpeer::proto::{MultiplexMessage, NetworkMessage, RequestId, RpcRequest};
    const REQUESTS: u64 = 100;
    for round in 0..10 {
        let (socket, mut raw) = raw_pair(Transport::Unix);
        let (h, rx, _) = spawn_peer(socket, 9, PeerConfig::default(), &[(RPC, 128)]);
        raw.set_timeouts(WAIT);
        for i in 0..REQUESTS {
            let request = MultiplexMessage::Message(NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: RPC,
                request_id: RequestId(i as u32),
                priority: 0,
                raw_request: numbered(i, 8),
            }));
            raw.write_all(&frame(&request)).unwrap();
        }
        let responders: Vec<Responder> = (0..REQUESTS)
            .map(|_| match rx[0].recv_timeout(WAIT) {
                Ok(Inbound::Request { responder, .. }) => responder,
                other => panic!("round {round}: expected a request, got {other:?}"),
            })
            .collect();
        for r in responders {
            r.respond(numbered(0, 1000)).expect("accepted");
        }
        let report = within("abort", WAIT, move || h.abort().unwrap());
        assert_eq!(
            report.messages_accepted, REQUESTS,
            "round {round}: {report:?}"
        );
        assert_eq!(report.bytes_accepted, REQUESTS * 1000, "round {round}");
        assert_eq!(
            report.messages_written + report.messages_abandoned,
            REQUESTS,
            "round {round}: {report:?}"
        );
        drop(raw);
    }
}
