//! Hostile input: random and crafted bytes against the frame decoder, random and crafted stream
//! frames against the reassembler. Nothing panics, memory stays within the limits, and every
//! refusal names its condition.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use syncpeer::proto::{
    DecodeError, DirectSendMsg, ErrorCode, FrameDecoder, FrameError, MultiplexMessage,
    NetworkMessage, ProtocolId, Reassembler, RequestId, RpcRequest, StreamError, StreamFragment,
    StreamHeader, StreamId, StreamMessage, encode_frame,
};

const MAX_FRAME: usize = 128;
/// Eight fragments per stream.
const MAX_MESSAGE: usize = MAX_FRAME * 8;

/// What a byte stream is made of: well-delimited frames (valid or not) and raw bytes.
#[derive(Clone, Debug)]
enum Segment {
    /// A correct length prefix and random contents.
    Frame(Vec<u8>),
    /// A valid frame.
    Valid(u8, Vec<u8>),
    /// Anything, including prefixes over the limit.
    Raw(Vec<u8>),
}

fn segment() -> impl Strategy<Value = Segment> {
    let bytes = |max| prop::collection::vec(any::<u8>(), 0..max);
    prop_oneof![
        3 => bytes(MAX_FRAME + 1).prop_map(Segment::Frame),
        3 => (any::<u8>(), bytes(MAX_FRAME - 8)).prop_map(|(p, d)| Segment::Valid(p, d)),
        1 => bytes(16).prop_map(Segment::Raw),
    ]
}

fn direct(protocol: u8, data: impl Into<Bytes>) -> MultiplexMessage {
    MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(protocol),
        priority: 0,
        raw_msg: data.into(),
    }))
}

fn frame_bytes(m: &MultiplexMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(m, MAX_FRAME, &mut out).unwrap();
    out.to_vec()
}

fn with_prefix(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Feeds `bytes` in chunks (cycled sizes) and decodes after each, as the reader does, until a
/// fatal error. Returns how many frames decoded and how many were malformed.
fn feed(bytes: &[u8], chunks: &[usize]) -> (usize, usize, bool) {
    let mut d = FrameDecoder::new(MAX_FRAME);
    let (mut frames, mut malformed) = (0, 0);
    let mut rest = bytes;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            return (frames, malformed, false);
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        d.extend(chunk);
        loop {
            match d.decode() {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(e @ FrameError::Malformed { .. }) => {
                    assert!(!e.is_fatal());
                    malformed += 1;
                }
                Err(e) => {
                    assert!(e.is_fatal());
                    assert!(
                        matches!(e, FrameError::FrameTooLarge { len, max: MAX_FRAME } if len > MAX_FRAME)
                    );
                    return (frames, malformed, true);
                }
            }
        }
        assert!(
            d.buffered() <= MAX_FRAME + 4 + size,
            "{} buffered",
            d.buffered()
        );
    }
    unreachable!("the chunk sizes cycle forever")
}

/// Random stream frames around a small id space, so they collide with the stream in progress.
fn stream_message() -> impl Strategy<Value = StreamMessage> {
    let data = prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
    let fragments = prop_oneof![4 => 0u8..10, 1 => any::<u8>()];
    prop_oneof![
        1 => (0u32..3, fragments.clone(), data.clone(), any::<bool>()).prop_map(|(id, n, d, err)| {
            let message = if err {
                NetworkMessage::Error(ErrorCode::ParsingError { message: 1, protocol: 2 })
            } else {
                NetworkMessage::RpcRequest(RpcRequest {
                    protocol_id: ProtocolId(1),
                    request_id: RequestId(id),
                    priority: 0,
                    raw_request: d,
                })
            };
            StreamMessage::Header(StreamHeader { request_id: StreamId(id), num_fragments: n, message })
        }),
        4 => (0u32..3, fragments, data).prop_map(|(id, f, raw_data)| {
            StreamMessage::Fragment(StreamFragment { request_id: StreamId(id), fragment_id: f, raw_data })
        }),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..400, 1..10),
    ) {
        feed(&bytes, &chunks);
        // With the first prefix forced under the limit, the random contents get decoded too.
        let mut bytes = bytes;
        if bytes.len() >= 4 {
            bytes[..3].fill(0);
        }
        feed(&bytes, &chunks);
    }

    #[test]
    fn delimited_garbage_is_skipped_frame_by_frame(
        segments in prop::collection::vec(segment(), 0..30),
        chunks in prop::collection::vec(1usize..400, 1..10),
    ) {
        let mut bytes = Vec::new();
        let mut delimited = 0;
        let mut valid = 0;
        let mut clean = true;
        for s in &segments {
            match s {
                Segment::Frame(payload) => bytes.extend(with_prefix(payload)),
                Segment::Valid(p, d) => {
                    bytes.extend(frame_bytes(&direct(*p, d.clone())));
                    valid += usize::from(clean);
                }
                Segment::Raw(raw) => {
                    bytes.extend_from_slice(raw);
                    clean = false;
                }
            }
            delimited += usize::from(clean);
        }
        let (frames, malformed, fatal) = feed(&bytes, &chunks);
        if clean {
            prop_assert!(!fatal);
            prop_assert_eq!(frames + malformed, delimited);
        }
        prop_assert!(frames >= valid);
    }

    #[test]
    fn random_stream_frames_never_panic_the_reassembler(
        messages in prop::collection::vec(stream_message(), 0..60),
    ) {
        let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
        for m in messages {
            match r.handle(m) {
                Ok(Some(done)) => {
                    prop_assert!(done.data_len() <= MAX_MESSAGE);
                    prop_assert!(!r.is_in_progress());
                }
                Ok(None) => prop_assert!(r.is_in_progress()),
                Err(StreamError::TooLarge(e)) => {
                    prop_assert!(e.len > MAX_MESSAGE);
                    prop_assert!(!r.is_in_progress());
                }
                Err(StreamError::Replaced { .. }) => prop_assert!(r.is_in_progress()),
                Err(_) => {}
            }
        }
    }

    #[test]
    fn random_frames_never_panic_a_session(
        messages in prop::collection::vec(stream_message(), 0..40),
        raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..10),
    ) {
        let config = syncpeer::proto::SessionConfig {
            max_frame_size: MAX_FRAME,
            max_message_size: MAX_MESSAGE,
            max_concurrent_outbound_rpcs: 2,
            max_concurrent_inbound_rpcs: 2,
            inbound_rpc_timeout: std::time::Duration::from_secs(1),
        };
        let now = Instant::now();
        let mut s: syncpeer::proto::Session<(), ()> = syncpeer::proto::Session::new(config);
        for m in messages {
            s.handle_frame(now, MultiplexMessage::Stream(m));
        }
        let mut d = FrameDecoder::new(MAX_FRAME);
        for payload in raw {
            d.extend(&with_prefix(&payload));
            match d.decode() {
                Ok(Some(m)) => s.handle_frame(now, m),
                Ok(None) => prop_assert!(false, "a whole frame was buffered"),
                Err(e) => s.handle_malformed(&e, ()),
            }
        }
        s.handle_timeout(now + std::time::Duration::from_secs(2));
        while s.poll_event().is_some() {}
        while let Some(t) = s.poll_transmit() {
            prop_assert!(t.message.encoded_len() <= MAX_FRAME);
        }
        prop_assert_eq!(s.inbound_rpcs(), 0);
    }
}

#[test]
fn truncated_frames_wait_for_the_rest() {
    let messages = [direct(2, &b"hello world"[..]), direct(200, vec![7; 120])];
    for m in messages {
        let bytes = frame_bytes(&m);
        for cut in 0..bytes.len() {
            let mut d = FrameDecoder::new(MAX_FRAME);
            d.extend(&bytes[..cut]);
            assert_eq!(d.decode(), Ok(None), "cut at {cut}");
            assert_eq!(d.decode(), Ok(None), "asking again changes nothing");
            assert_eq!(d.is_idle(), cut == 0, "cut at {cut}");
            // The prefix is consumed once whole; the rest waits in the buffer.
            assert_eq!(d.buffered(), if cut < 4 { cut } else { cut - 4 });
            d.extend(&bytes[cut..]);
            assert_eq!(d.decode(), Ok(Some(m.clone())));
            assert!(d.is_idle());
        }
    }
}

#[test]
fn oversized_length_prefix_is_fatal() {
    for len in [MAX_FRAME as u32 + 1, 1 << 24, u32::MAX] {
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.extend(&len.to_be_bytes());
        d.extend(&[0; 16]);
        let e = d.decode().unwrap_err();
        assert_eq!(
            e,
            FrameError::FrameTooLarge {
                len: len as usize,
                max: MAX_FRAME
            }
        );
        assert!(e.is_fatal());
        assert_eq!(e.parsing_error_bytes(), (0, 0));
        assert_eq!(
            d.buffered(),
            16,
            "nothing reserved or buffered beyond what arrived"
        );
    }
    let e = FrameError::FrameTooLarge { len: 129, max: 128 };
    assert_eq!(e.to_string(), "frame of 129 bytes exceeds the limit of 128");
    // Exactly the limit is a frame like any other.
    let mut d = FrameDecoder::new(MAX_FRAME);
    d.extend(&(MAX_FRAME as u32).to_be_bytes());
    assert_eq!(d.decode(), Ok(None));
    assert!(!d.is_idle());
}

#[test]
fn malformed_frames_name_the_condition_and_keep_the_first_two_bytes() {
    let unknown = |kind, index| DecodeError::UnknownVariant { kind, index };
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Truncated),
        (&[0x01], DecodeError::Truncated),
        // Non-canonical ULEB128: variant, protocol id, payload length.
        (&[0x80, 0x00], DecodeError::NonCanonicalUleb),
        (
            &[0x00, 0x03, 0x82, 0x00, 0x00, 0x00],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0x80, 0x00],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0x81, 0x80, 0x00, 0x01],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0xff, 0xff, 0xff, 0xff, 0x10],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x80, 0x02, 0x00, 0x00],
            DecodeError::ProtocolOutOfRange(256),
        ),
        // Trailing bytes, at each level.
        (
            &[0x00, 0x03, 0x02, 0x00, 0x00, 0xaa],
            DecodeError::TrailingBytes(1),
        ),
        (
            &[0x00, 0x00, 0x00, 0x09, 0x05, 0x00, 0x00],
            DecodeError::TrailingBytes(2),
        ),
        (
            &[0x01, 0x01, 0, 0, 0, 0, 0x01, 0x01, 0x0b, 0x0c],
            DecodeError::TrailingBytes(1),
        ),
        // Unknown variants of every enum.
        (&[0x02], unknown("MultiplexMessage", 2)),
        (
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            unknown("MultiplexMessage", u32::MAX),
        ),
        (&[0x00, 0x04], unknown("NetworkMessage", 4)),
        (&[0x00, 0x00, 0x02], unknown("ErrorCode", 2)),
        (
            &[0x00, 0x00, 0x01, 0x02, 0x00],
            unknown("NotSupportedType", 2),
        ),
        (&[0x01, 0x02], unknown("StreamMessage", 2)),
        (
            &[0x01, 0x00, 0x2a, 0, 0, 0, 0x01, 0x05],
            unknown("NetworkMessage", 5),
        ),
    ];
    let next = frame_bytes(&direct(2, &b"next"[..]));
    for &(payload, error) in cases {
        let mut d = FrameDecoder::new(MAX_FRAME);
        d.extend(&with_prefix(payload));
        d.extend(&next);
        let e = d.decode().unwrap_err();
        let kept = &payload[..payload.len().min(8)];
        let expected = FrameError::Malformed {
            error,
            len: payload.len(),
            prefix: Bytes::copy_from_slice(kept),
        };
        assert_eq!(e, expected, "{payload:02x?}");
        assert!(!e.is_fatal());
        let first = |i: usize| payload.get(i).copied().unwrap_or(0);
        assert_eq!(
            e.parsing_error_bytes(),
            (first(0), first(1)),
            "{payload:02x?}"
        );
        assert_eq!(
            d.decode(),
            Ok(Some(direct(2, &b"next"[..]))),
            "the decoder goes on"
        );
        assert!(d.is_idle());
    }
}

fn header(id: u32, num_fragments: u8, data: &'static [u8]) -> StreamMessage {
    StreamMessage::Header(StreamHeader {
        request_id: StreamId(id),
        num_fragments,
        message: NetworkMessage::DirectSendMsg(DirectSendMsg {
            protocol_id: ProtocolId(4),
            priority: 0,
            raw_msg: Bytes::from_static(data),
        }),
    })
}

fn fragment(id: u32, fragment_id: u8, data: &'static [u8]) -> StreamMessage {
    StreamMessage::Fragment(StreamFragment {
        request_id: StreamId(id),
        fragment_id,
        raw_data: Bytes::from_static(data),
    })
}

fn whole(data: &'static [u8]) -> Option<NetworkMessage> {
    match header(0, 1, data) {
        StreamMessage::Header(h) => Some(h.message),
        StreamMessage::Fragment(_) => None,
    }
}

#[test]
fn header_checks() {
    let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
    for n in [9, 255] {
        let e = r.handle(header(1, n, b"a"));
        assert_eq!(
            e,
            Err(StreamError::TooManyFragments {
                num_fragments: n,
                max: 8
            })
        );
        assert!(!r.is_in_progress());
    }
    assert_eq!(r.handle(header(1, 0, b"a")), Err(StreamError::NoFragments));
    let error = StreamMessage::Header(StreamHeader {
        request_id: StreamId(1),
        num_fragments: 1,
        message: NetworkMessage::Error(ErrorCode::ParsingError {
            message: 0,
            protocol: 0,
        }),
    });
    assert_eq!(r.handle(error), Err(StreamError::ErrorMessageStreamed));
    assert!(!r.is_in_progress());
    assert_eq!(
        r.handle(header(1, 8, b"a")),
        Ok(None),
        "the limit itself is accepted"
    );
}

#[test]
fn bad_fragments_are_refused_and_the_stream_goes_on() {
    let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
    assert_eq!(r.handle(fragment(5, 1, b"x")), Err(StreamError::NoStream));
    r.handle(header(5, 3, b"ab")).unwrap();
    let refused = [
        (
            fragment(5, 2, b"x"),
            StreamError::OutOfOrder {
                expected: 1,
                got: 2,
            },
        ),
        (
            fragment(5, 0, b"x"),
            StreamError::OutOfOrder {
                expected: 1,
                got: 0,
            },
        ),
        (
            fragment(6, 1, b"x"),
            StreamError::WrongStream {
                expected: StreamId(5),
                got: StreamId(6),
            },
        ),
    ];
    for (f, e) in refused {
        assert_eq!(r.handle(f), Err(e));
    }
    assert_eq!(r.handle(fragment(5, 1, b"cd")), Ok(None));
    let refused = [
        (
            fragment(5, 1, b"x"),
            StreamError::OutOfOrder {
                expected: 2,
                got: 1,
            },
        ),
        (
            fragment(5, 4, b"x"),
            StreamError::OutOfOrder {
                expected: 2,
                got: 4,
            },
        ),
        (
            fragment(5, 255, b"x"),
            StreamError::OutOfOrder {
                expected: 2,
                got: 255,
            },
        ),
    ];
    for (f, e) in refused {
        assert_eq!(r.handle(f), Err(e));
    }
    assert_eq!(r.handle(fragment(5, 2, b"ef")), Ok(None));
    assert_eq!(r.handle(fragment(5, 3, b"gh")), Ok(whole(b"abcdefgh")));
    // Past the end: the stream is finished.
    assert_eq!(r.handle(fragment(5, 4, b"x")), Err(StreamError::NoStream));
    assert!(!r.is_in_progress());
}

#[test]
fn new_header_mid_stream_replaces_the_old_one() {
    let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
    r.handle(header(1, 3, b"old")).unwrap();
    r.handle(fragment(1, 1, b"x")).unwrap();
    assert_eq!(
        r.handle(header(2, 2, b"new")),
        Err(StreamError::Replaced { old: StreamId(1) })
    );
    assert!(r.is_in_progress());
    assert_eq!(
        r.handle(fragment(1, 2, b"x")),
        Err(StreamError::WrongStream {
            expected: StreamId(2),
            got: StreamId(1)
        })
    );
    assert_eq!(r.handle(fragment(2, 1, b"-")), Ok(None));
    assert_eq!(r.handle(fragment(2, 2, b"er")), Ok(whole(b"new-er")));
    // A header with the same id replaces too: a restarted stream.
    r.handle(header(3, 2, b"a")).unwrap();
    assert_eq!(
        r.handle(header(3, 1, b"b")),
        Err(StreamError::Replaced { old: StreamId(3) })
    );
    assert_eq!(r.handle(fragment(3, 1, b"c")), Ok(whole(b"bc")));
}

#[test]
fn oversized_fragments_discard_the_stream() {
    static BIG: [u8; 400] = [1; 400];
    let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
    r.handle(header(1, 4, &BIG)).unwrap();
    r.handle(fragment(1, 1, &BIG)).unwrap();
    match r.handle(fragment(1, 2, &BIG)) {
        Err(StreamError::TooLarge(e)) => assert_eq!((e.len, e.max), (1200, MAX_MESSAGE)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!r.is_in_progress());
    assert_eq!(r.handle(fragment(1, 3, &BIG)), Err(StreamError::NoStream));
}
