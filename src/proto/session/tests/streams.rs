//! Messages between two sessions: streaming of large messages and its interleaving with small
//! ones, completions, lost fragments, size limits, malformed frames and close.

use super::*;

/// What a frame carries, for checking the wire order.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Small(u32),
    Stream { id: u32, fragment: u8 },
}

fn piece(frame: &MultiplexMessage) -> Piece {
    match frame {
        MultiplexMessage::Message(m) => Piece::Small(match m.data().get(..4) {
            Some(b) => u32::from_le_bytes(b.try_into().unwrap()),
            None => u32::MAX,
        }),
        MultiplexMessage::Stream(StreamMessage::Header(h)) => Piece::Stream {
            id: h.request_id.0,
            fragment: 0,
        },
        MultiplexMessage::Stream(StreamMessage::Fragment(f)) => Piece::Stream {
            id: f.request_id.0,
            fragment: f.fragment_id,
        },
    }
}

fn small(i: u32) -> Bytes {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(20, 0xab);
    v.into()
}

/// The one test at the default sizes: 64 MiB in 4 MiB frames, with a vote sent after every
/// frame of it.
#[test]
fn big_message_lets_small_ones_pass_between_its_fragments() {
    let mut p = Pair::new(default_config());
    let big = pattern(64 * MIB);
    p.a.session.send(P, big.clone(), 999).unwrap();
    let mut wire = Vec::new();
    let mut sent = 0;
    while let Some(t) = p.poll(Side::A) {
        let kind = piece(&t.message);
        let is_stream = matches!(kind, Piece::Stream { .. });
        let completes = t.completes.as_ref().map(|c| (c.len, c.tag));
        let expected = match kind {
            Piece::Stream { fragment: 16, .. } => Some((64 * MIB, 999)),
            Piece::Stream { .. } => None,
            Piece::Small(i) => Some((20, i)),
        };
        assert_eq!(completes, expected, "completion of {kind:?}");
        wire.push(kind);
        p.deliver(Side::B, &[t.message]);
        if is_stream {
            p.a.session.send(P, small(sent), sent).unwrap();
            sent += 1;
        }
    }
    // Header, then each small message right behind the stream frame it followed.
    let mut expected = Vec::new();
    for fragment in 0..=16u8 {
        expected.push(Piece::Stream { id: 0, fragment });
        expected.push(Piece::Small(u32::from(fragment)));
    }
    assert_eq!(wire, expected);
    let mut events = p.events(Side::B).into_iter().map(message);
    for i in 0..16 {
        assert_eq!(
            events.next().unwrap(),
            small(i),
            "small {i} arrived before the big one"
        );
    }
    assert!(
        events.next().unwrap() == big,
        "the big message arrived intact"
    );
    assert_eq!(events.next().unwrap(), small(16));
    assert!(events.next().is_none());
    let tags: Vec<Tok> = p.a.completed.iter().map(|c| c.tag).collect();
    assert_eq!(tags, (0..16).chain([999, 16]).collect::<Vec<_>>());
}

#[test]
fn small_frames_between_fragments_are_bounded() {
    let config = small_config();
    let f = fragment_size(config.max_frame_size);
    let mut p = Pair::new(config);
    let big = pattern(f * 20);
    p.a.session.send(P, big.clone(), 999).unwrap();
    for i in 0..200 {
        p.a.session.send(P, small(i), i).unwrap();
    }
    let frames = p.transmit(Side::A);
    let small_len = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: P,
        priority: 0,
        raw_msg: small(0),
    }))
    .encoded_len();
    let mut between = 0;
    let mut stream_frames = 0;
    for frame in &frames {
        match piece(frame) {
            Piece::Small(_) => between += frame.encoded_len(),
            Piece::Stream { .. } => {
                // Up to a fragment's worth of small frames (the last one may overshoot).
                assert!(
                    between < f + small_len,
                    "{between} bytes between two stream frames"
                );
                assert!(
                    between > f - small_len,
                    "only {between} bytes of small frames passed"
                );
                between = 0;
                stream_frames += 1;
            }
        }
    }
    assert_eq!(stream_frames, 20);
    let smalls: Vec<u32> = frames
        .iter()
        .filter_map(|f| match piece(f) {
            Piece::Small(i) => Some(i),
            Piece::Stream { .. } => None,
        })
        .collect();
    assert_eq!(
        smalls,
        (0..200).collect::<Vec<_>>(),
        "small messages keep their order"
    );
    // The stream is not starved either: it ends before the last small message.
    assert!(matches!(piece(frames.last().unwrap()), Piece::Small(_)));
    p.deliver(Side::B, &frames);
    let received: Vec<Bytes> = p.events(Side::B).into_iter().map(message).collect();
    assert_eq!(received.len(), 201);
    assert!(received.contains(&big));
}

#[test]
fn completion_marks_only_the_last_frame_and_streams_do_not_interleave() {
    let config = small_config();
    let f = fragment_size(config.max_frame_size);
    let mut p = Pair::new(config);
    let (one, two) = (pattern(f * 3 + 1), pattern(f * 2));
    p.a.session.send(P, one.clone(), 1).unwrap();
    p.a.session.send(P, two.clone(), 2).unwrap();
    p.a.session.send(P, pattern(f), 3).unwrap();
    let mut pieces = Vec::new();
    while let Some(t) = p.poll(Side::A) {
        pieces.push((piece(&t.message), t.completes.map(|c| (c.len, c.tag))));
    }
    let stream = |id, fragment| Piece::Stream { id, fragment };
    let expected = [
        (Piece::Small(u32::from_le_bytes([1, 0, 0, 0])), Some((f, 3))),
        (stream(0, 0), None),
        (stream(0, 1), None),
        (stream(0, 2), None),
        (stream(0, 3), Some((f * 3 + 1, 1))),
        (stream(1, 0), None),
        (stream(1, 1), Some((f * 2, 2))),
    ];
    assert_eq!(pieces, expected);
}

#[test]
fn malformed_frame_gets_a_parsing_error_reply() {
    let mut p = Pair::new(small_config());
    // A `NetworkMessage` variant 7 does not exist.
    p.receive(Side::B, &[0, 0, 0, 3, 0x00, 0x07, 0x01]);
    assert!(p.events(Side::B).is_empty());
    let reply = p.transmit(Side::B);
    let error = ErrorCode::ParsingError {
        message: 0x00,
        protocol: 0x07,
    };
    assert_eq!(
        reply,
        [MultiplexMessage::Message(NetworkMessage::Error(error))]
    );
    assert_eq!(
        p.b.completed,
        [Completion { len: 0, tag: 0 }],
        "an error reply completes with no payload, under the tag it was given"
    );
    p.deliver(Side::A, &reply);
    assert!(matches!(only(p.events(Side::A)), Event::RemoteError(e) if e == error));

    // A real frame corrupted in flight: its variant byte, then a length that leaves a byte over.
    p.a.session
        .send(P, Bytes::from_static(b"hello"), 0)
        .unwrap();
    let frame = p.transmit(Side::A);
    let mut bytes = encode(&frame[0], 256);
    bytes[5] = 0x09;
    p.receive(Side::B, &bytes);
    let mut trailing = encode(&frame[0], 256);
    trailing[3] += 1;
    trailing.push(0xff);
    p.receive(Side::B, &trailing);
    let replies = p.transmit(Side::B);
    let expected = [
        ErrorCode::ParsingError {
            message: 0x00,
            protocol: 0x09,
        },
        ErrorCode::ParsingError {
            message: 0x00,
            protocol: 0x03,
        },
    ];
    let expected = expected.map(|e| MultiplexMessage::Message(NetworkMessage::Error(e)));
    assert_eq!(replies, expected);
    // The connection goes on.
    p.deliver(Side::B, &frame);
    assert_eq!(
        message(only(p.events(Side::B))),
        Bytes::from_static(b"hello")
    );
}

#[test]
fn lost_fragment_loses_only_its_stream() {
    let config = small_config();
    let f = fragment_size(config.max_frame_size);
    let mut p = Pair::new(config);
    let (one, two) = (pattern(f * 3), pattern(f * 2 + 5));
    p.a.session.send(P, one, 1).unwrap();
    p.a.session.send(P, two.clone(), 2).unwrap();
    let mut frames = p.transmit(Side::A);
    assert_eq!(frames.len(), 3 + 3);
    frames.remove(1); // fragment 1 of stream 0
    p.deliver(Side::B, &frames);
    let events = p.events(Side::B);
    assert_eq!(events.len(), 3, "{events:?}");
    let mut events = events.into_iter();
    assert!(matches!(
        events.next(),
        Some(Event::Stream(StreamError::OutOfOrder {
            expected: 1,
            got: 2
        }))
    ));
    assert!(matches!(
        events.next(),
        Some(Event::Stream(StreamError::Replaced { old: StreamId(0) }))
    ));
    assert_eq!(message(events.next().unwrap()), two);
}

#[test]
fn send_refuses_what_the_receiver_would_refuse() {
    let config = small_config();
    let f = fragment_size(config.max_frame_size);
    // The receiver takes `max_message_size / max_frame_size` fragments after the header.
    let fits = f * (1 + config.max_message_size / config.max_frame_size);
    assert!(
        fits < config.max_message_size,
        "the case this test is about"
    );
    let mut p = Pair::new(config);
    let largest = pattern(fits);
    p.a.session.send(P, largest.clone(), 1).unwrap();
    p.pump();
    assert_eq!(message(only(p.events(Side::B))), largest);
    let refused = p.a.session.send(P, pattern(fits + 1), 2);
    assert_eq!(
        refused,
        Err((
            MessageTooLarge {
                len: fits + 1,
                max: fits
            },
            2
        ))
    );
    assert!(!p.a.session.has_transmit());
}

#[test]
fn close_hands_back_pending_rpcs_and_untransmitted_messages() {
    let config = small_config();
    let f = fragment_size(config.max_frame_size);
    let mut p = Pair::new(config);
    p.start_rpc(Side::A, b"q0", secs(5), 10);
    p.start_rpc(Side::A, b"q1", secs(5), 11);
    p.a.session.send(P, small(30), 30).unwrap();
    p.a.session.send(P, pattern(f * 2), 40).unwrap();
    p.a.session.send(P, small(50), 50).unwrap();
    // The three requests and small messages, then the stream's header: 40 is half sent.
    let sent: Vec<Piece> = (0..5)
        .map(|_| piece(&p.poll(Side::A).unwrap().message))
        .collect();
    assert_eq!(sent[4], Piece::Stream { id: 0, fragment: 0 });
    p.a.session.send(P, small(60), 60).unwrap();
    let Leftovers { mut rpcs, messages } = p.a.session.close();
    rpcs.sort();
    assert_eq!(rpcs, [(RequestId(0), 10), (RequestId(1), 11)]);
    assert_eq!(
        messages,
        [
            Completion { len: 20, tag: 60 },
            Completion {
                len: f * 2,
                tag: 40
            }
        ]
    );
    let written: Vec<Tok> = p.a.completed.iter().map(|c| c.tag).collect();
    assert_eq!(written, [1010, 1011, 30, 50]);
    let s = &mut p.a.session;
    assert!(!s.has_transmit() && s.poll_transmit().is_none());
    assert_eq!((s.outbound_rpcs(), s.poll_timeout()), (0, None));
    assert!(p.events(Side::A).is_empty());
}
