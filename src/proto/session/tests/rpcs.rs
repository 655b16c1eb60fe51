//! RPCs between two sessions: round trips, timeouts on both sides, late and duplicated
//! responses, cancellation, concurrency limits, id assignment and wrap-around.

use super::*;

#[test]
fn rpc_round_trip() {
    let mut p = Pair::new(small_config());
    let t0 = p.now();
    assert_eq!(p.start_rpc(Side::A, b"ping", secs(2), 1), 0);
    assert_eq!(p.a.session.poll_timeout(), Some(t0 + secs(2)));
    p.pump();
    let (protocol, data, slot, deadline) = request(only(p.events(Side::B)));
    assert_eq!(
        (protocol, &data[..], deadline),
        (P, &b"ping"[..], t0 + secs(10))
    );
    assert_eq!(p.b.session.inbound_rpcs(), 1);
    p.advance(Duration::from_millis(3));
    p.respond(Side::B, slot, b"pong", 2);
    p.pump();
    assert_eq!(rpc_done(only(p.events(Side::A))), (0, 1, ok(b"pong")));
    assert!(p.events(Side::B).is_empty());
    assert_eq!(p.a.completed, [Completion { len: 4, tag: 1001 }]);
    assert_eq!(p.b.completed, [Completion { len: 4, tag: 2 }]);
    for s in [&p.a.session, &p.b.session] {
        assert_eq!(
            (s.outbound_rpcs(), s.inbound_rpcs(), s.poll_timeout()),
            (0, 0, None)
        );
    }
}

#[test]
fn rpc_times_out_at_its_deadline() {
    let mut p = Pair::new(small_config());
    let t0 = p.now();
    p.start_rpc(Side::A, b"ping", Duration::from_millis(500), 1);
    p.pump();
    request(only(p.events(Side::B)));
    assert_eq!(
        p.a.session.poll_timeout(),
        Some(t0 + Duration::from_millis(500))
    );
    p.advance(Duration::from_millis(499));
    p.a.session.handle_timeout(p.now());
    assert!(p.events(Side::A).is_empty());
    assert_eq!(p.a.session.outbound_rpcs(), 1);
    // A driver wakes up a little late and passes the time it woke up.
    p.advance(Duration::from_millis(2));
    p.a.session.handle_timeout(p.now());
    assert_eq!(
        rpc_done(only(p.events(Side::A))),
        (0, 1, Err(RpcFailure::TimedOut))
    );
    assert_eq!(p.a.session.outbound_rpcs(), 0);
    assert_eq!(p.a.session.poll_timeout(), None);
    assert!(!p.a.session.has_transmit());
}

#[test]
fn late_response_after_timeout_is_unknown_and_nothing_else() {
    let mut p = Pair::new(small_config());
    p.start_rpc(Side::A, b"ping", secs(1), 1);
    p.pump();
    let slot = request(only(p.events(Side::B))).2;
    p.advance(secs(1));
    p.a.session.handle_timeout(p.now());
    assert_eq!(
        rpc_done(only(p.events(Side::A))),
        (0, 1, Err(RpcFailure::TimedOut))
    );
    // B still has 9 s of its own deadline: it answers, too late for A.
    p.respond(Side::B, slot, b"late", 2);
    p.pump();
    assert!(matches!(
        only(p.events(Side::A)),
        Event::UnknownResponse(RequestId(0))
    ));
    assert!(!p.a.session.has_transmit());
    assert!(p.events(Side::B).is_empty());
    assert_eq!(p.a.session.outbound_rpcs(), 0);
}

#[test]
fn cancelled_rpc_ignores_its_late_response() {
    let mut p = Pair::new(small_config());
    p.start_rpc(Side::A, b"one", secs(5), 1);
    p.start_rpc(Side::A, b"two", secs(5), 2);
    p.pump();
    let slots = slots(p.events(Side::B));
    assert_eq!(p.a.session.cancel_rpcs_where(|token| *token == 1).len(), 1);
    assert!(
        p.events(Side::A).is_empty(),
        "a cancelled caller is not told"
    );
    assert_eq!(p.a.session.outbound_rpcs(), 1);
    p.respond(Side::B, slots[0], b"r1", 0);
    p.respond(Side::B, slots[1], b"r2", 0);
    p.pump();
    let mut events = p.events(Side::A).into_iter();
    assert!(matches!(
        events.next(),
        Some(Event::UnknownResponse(RequestId(0)))
    ));
    assert_eq!(rpc_done(events.next().unwrap()), (1, 2, ok(b"r2")));
    assert!(events.next().is_none());
    p.advance(secs(6));
    p.a.session.handle_timeout(p.now());
    assert!(
        p.events(Side::A).is_empty(),
        "a cancelled rpc does not time out later"
    );
}

#[test]
fn too_many_pending_hands_the_token_back_and_sends_nothing() {
    let mut config = small_config();
    config.max_concurrent_outbound_rpcs = 2;
    let mut p = Pair::new(config);
    let now = p.now();
    p.start_rpc(Side::A, b"0", secs(5), 10);
    p.start_rpc(Side::A, b"1", secs(5), 11);
    let refused =
        p.a.session
            .start_rpc(now, P, Bytes::from_static(b"2"), secs(5), 12, 1012);
    assert_eq!(refused, Err(RpcRefused::TooManyPending(2, 12)));
    let frames = p.transmit(Side::A);
    let ids: Vec<u32> = frames
        .iter()
        .map(|f| match f {
            MultiplexMessage::Message(NetworkMessage::RpcRequest(r)) => r.request_id.0,
            other => panic!("unexpected frame {other:?}"),
        })
        .collect();
    assert_eq!(ids, [0, 1], "the refused request emits no frame");
    assert_eq!(
        p.a.completed,
        [
            Completion { len: 1, tag: 1010 },
            Completion { len: 1, tag: 1011 }
        ]
    );
    p.deliver(Side::B, &frames);
    let slot = request(p.events(Side::B).remove(0)).2;
    p.respond(Side::B, slot, b"r", 0);
    p.pump();
    assert_eq!(rpc_done(only(p.events(Side::A))), (0, 10, ok(b"r")));
    assert_eq!(
        p.start_rpc(Side::A, b"3", secs(5), 13),
        2,
        "the refusal consumed no id"
    );
    p.transmit(Side::A);

    let max = config.max_message_size;
    let big = Bytes::from(vec![0; max + 1]);
    p.a.session.cancel_rpcs_where(|_| true);
    let refused = p.a.session.start_rpc(now, P, big, secs(5), 14, 1014);
    match refused {
        Err(RpcRefused::TooLarge(e, 14)) => assert_eq!(e.len, max + 1),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!p.a.session.has_transmit());
}

#[test]
fn inbound_reply_after_deadline_is_refused_and_not_sent() {
    let mut p = Pair::new(small_config());
    for token in 0..4 {
        p.start_rpc(Side::A, b"q", secs(60), token);
    }
    p.pump();
    let requests: Vec<_> = p.events(Side::B).into_iter().map(request).collect();
    let slots: Vec<u64> = requests.iter().map(|r| r.2).collect();
    let deadline = requests[0].3;
    assert_eq!(deadline, p.now() + secs(10));
    let just_before = deadline - Duration::from_nanos(1);
    let reply = |p: &mut Pair, slot, at| p.b.session.respond(slot, at, Bytes::from_static(b"r"), 0);
    // Just in time.
    reply(&mut p, slots[0], just_before).unwrap();
    assert_eq!(p.transmit(Side::B).len(), 1);
    // At the deadline: refused, the slot is freed, nothing goes out.
    p.advance(secs(10));
    let now = p.now();
    assert_eq!(reply(&mut p, slots[1], now), Err(ReplyRefused::TimedOut));
    assert!(!p.b.session.has_transmit());
    assert_eq!(p.b.session.inbound_rpcs(), 2);
    // Once the timer has run the requests no longer count against the limit ...
    p.b.session.handle_timeout(now);
    assert_eq!(p.b.session.inbound_rpcs(), 0);
    assert_eq!(p.b.session.poll_timeout(), None, "no timer left on B");
    // ... a late reply is still refused ...
    assert_eq!(reply(&mut p, slots[2], now), Err(ReplyRefused::TimedOut));
    assert!(!p.b.session.has_transmit());
    // ... but one made in time that reaches the session after expiry is honoured.
    reply(&mut p, slots[3], just_before).unwrap();
    assert_eq!(p.transmit(Side::B).len(), 1);
    assert_eq!(
        reply(&mut p, slots[3], just_before),
        Err(ReplyRefused::Unknown)
    );
    assert!(p.events(Side::B).is_empty());
}

#[test]
fn inbound_concurrency_limit_refuses_extra_requests() {
    let mut b_config = small_config();
    b_config.max_concurrent_inbound_rpcs = 2;
    let mut p = Pair::with_configs(small_config(), b_config);
    for token in 0..3 {
        p.start_rpc(Side::A, b"q", secs(5), token);
    }
    p.pump();
    let mut events = p.events(Side::B).into_iter();
    let first = request(events.next().unwrap()).2;
    request(events.next().unwrap());
    match events.next() {
        Some(Event::RequestRefused {
            protocol,
            request_id,
        }) => {
            assert_eq!((protocol, request_id), (P, RequestId(2)));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(events.next().is_none());
    assert!(
        !p.b.session.has_transmit(),
        "a refused request gets no answer"
    );
    assert_eq!(p.b.session.inbound_rpcs(), 2);
    // Answering one frees a slot for the next request.
    p.respond(Side::B, first, b"r", 0);
    p.start_rpc(Side::A, b"q", secs(5), 3);
    p.pump();
    assert_eq!(rpc_done(only(p.events(Side::A))), (0, 0, ok(b"r")));
    request(only(p.events(Side::B)));
    // The refused request times out on A, as in the original.
    p.advance(secs(5));
    p.a.session.handle_timeout(p.now());
    let timed_out: Vec<_> = p.events(Side::A).into_iter().map(rpc_done).collect();
    let timed_out: Vec<_> = timed_out
        .into_iter()
        .map(|(id, token, r)| (id, token, r.is_err()))
        .collect();
    assert_eq!(timed_out, [(1, 1, true), (2, 2, true), (3, 3, true)]);
}

#[test]
fn concurrent_rpcs_in_both_directions() {
    const QUESTIONS: [&[u8]; 3] = [b"q0", b"q1", b"q2"];
    const ANSWERS: [&[u8]; 3] = [b"a0", b"a1", b"a2"];
    let mut p = Pair::new(small_config());
    for (i, q) in QUESTIONS.iter().enumerate() {
        assert_eq!(p.start_rpc(Side::A, q, secs(5), 10 + i as Tok), i as u32);
        assert_eq!(p.start_rpc(Side::B, q, secs(5), 20 + i as Tok), i as u32);
    }
    p.pump();
    for side in [Side::A, Side::B] {
        let events = p.events(side);
        let mut requests: Vec<_> = events.into_iter().map(request).collect();
        assert_eq!(
            requests.iter().map(|r| &r.1[..]).collect::<Vec<_>>(),
            QUESTIONS
        );
        // Answer in reverse order: responses are matched by id, not by position.
        requests.reverse();
        for r in requests {
            let i = QUESTIONS.iter().position(|q| *q == &r.1[..]).unwrap();
            p.respond(side, r.2, ANSWERS[i], 0);
        }
    }
    p.pump();
    for (side, base) in [(Side::A, 10), (Side::B, 20)] {
        let done: Vec<_> = p.events(side).into_iter().map(rpc_done).collect();
        let expected: Vec<_> = (0..3)
            .rev()
            .map(|i| (i, base + i, ok(ANSWERS[i as usize])))
            .collect();
        assert_eq!(done, expected, "{side:?}");
    }
}

#[test]
fn request_ids_wrap() {
    let mut p = Pair::new(small_config());
    p.a.session.outbound.set_next_id(u32::MAX - 1);
    for (token, expected) in [(1, u32::MAX - 1), (2, u32::MAX), (3, 0), (4, 1)] {
        assert_eq!(p.start_rpc(Side::A, b"q", secs(5), token), expected);
        p.pump();
        let slot = request(only(p.events(Side::B))).2;
        p.respond(Side::B, slot, b"r", 0);
        p.pump();
        assert_eq!(
            rpc_done(only(p.events(Side::A))),
            (expected, token, ok(b"r"))
        );
    }
    // After a wrap an id still waiting is skipped.
    assert_eq!(p.start_rpc(Side::A, b"q", secs(5), 5), 2);
    p.a.session.outbound.set_next_id(u32::MAX);
    assert_eq!(p.start_rpc(Side::A, b"q", secs(5), 6), u32::MAX);
    p.a.session.outbound.set_next_id(2);
    assert_eq!(p.start_rpc(Side::A, b"q", secs(5), 7), 3);
}

#[test]
fn reordered_and_duplicated_responses_are_matched_by_id() {
    let mut p = Pair::new(small_config());
    p.start_rpc(Side::A, b"q0", secs(5), 10);
    p.start_rpc(Side::A, b"q1", secs(5), 11);
    p.pump();
    let slots = slots(p.events(Side::B));
    p.respond(Side::B, slots[0], b"r0", 0);
    p.respond(Side::B, slots[1], b"r1", 0);
    let mut frames = p.transmit(Side::B);
    frames.swap(0, 1);
    frames.push(frames[0].clone());
    p.deliver(Side::A, &frames);
    let mut events = p.events(Side::A).into_iter();
    assert_eq!(rpc_done(events.next().unwrap()), (1, 11, ok(b"r1")));
    assert_eq!(rpc_done(events.next().unwrap()), (0, 10, ok(b"r0")));
    assert!(matches!(
        events.next(),
        Some(Event::UnknownResponse(RequestId(1)))
    ));
    assert!(events.next().is_none());
}

#[test]
fn oversized_rpc_is_refused_whatever_the_limits() {
    // A message limit over what 255 fragments can carry: the request must be refused, not
    // admitted and then found unsendable.
    let mut config = small_config();
    config.max_message_size = 1 << 20;
    let mut p = Pair::new(config);
    let now = p.now();
    let len = fragment_size(config.max_frame_size) * 256 + 1;
    let refused = p.a.session.start_rpc(now, P, pattern(len), secs(5), 1, 2);
    assert!(
        matches!(refused, Err(RpcRefused::TooLarge(MessageTooLarge { len: l, .. }, 1)) if l == len)
    );
    assert_eq!(p.a.session.outbound_rpcs(), 0);
    assert!(!p.a.session.has_transmit());
}
