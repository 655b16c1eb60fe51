//! Properties of the wire format and of the sending pipeline: every message round-trips
//! canonically, and any sequence of messages, large ones streamed, crosses fragmentation,
//! framing, any chunking of the byte stream, decoding and reassembly intact and in order.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use syncpeer::proto::{
    DirectSendMsg, ErrorCode, Event, FrameDecoder, MessageTooLarge, MultiplexMessage,
    NetworkMessage, NotSupportedKind, OutboundStream, ProtocolId, Reassembler, RequestId,
    RpcRequest, RpcResponse, Session, SessionConfig, StreamFragment, StreamHeader, StreamId,
    StreamMessage, encode_frame_split,
};

const MAX_FRAME: usize = 128;
const MAX_MESSAGE: usize = 128 * 20;
/// Payload bytes per stream frame (`max_frame_size − 64`).
const FRAGMENT: usize = MAX_FRAME - 64;
/// The largest payload a receiver with these limits reassembles: the header's share and
/// `MAX_MESSAGE / MAX_FRAME` fragments.
const LARGEST: usize = FRAGMENT * (1 + MAX_MESSAGE / MAX_FRAME);
const P: ProtocolId = ProtocolId(9);

fn payload(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        (any::<u8>(), any::<u8>())
            .prop_map(|(message, protocol)| ErrorCode::ParsingError { message, protocol }),
        (any::<bool>(), any::<u8>()).prop_map(|(rpc, p)| {
            let kind = if rpc {
                NotSupportedKind::RpcRequest
            } else {
                NotSupportedKind::DirectSendMsg
            };
            ErrorCode::NotSupported(kind, ProtocolId(p))
        }),
    ]
}

/// Any `NetworkMessage`; without `Error` when `streamable`.
fn network(streamable: bool, max: usize) -> BoxedStrategy<NetworkMessage> {
    let data = prop_oneof![
        (any::<u8>(), any::<u32>(), any::<u8>(), payload(max)).prop_map(|(p, id, prio, d)| {
            NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: ProtocolId(p),
                request_id: RequestId(id),
                priority: prio,
                raw_request: d,
            })
        }),
        (any::<u32>(), any::<u8>(), payload(max)).prop_map(|(id, prio, d)| {
            NetworkMessage::RpcResponse(RpcResponse {
                request_id: RequestId(id),
                priority: prio,
                raw_response: d,
            })
        }),
        (any::<u8>(), any::<u8>(), payload(max)).prop_map(|(p, prio, d)| {
            NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(p),
                priority: prio,
                raw_msg: d,
            })
        }),
    ];
    if streamable {
        data.boxed()
    } else {
        prop_oneof![1 => error_code().prop_map(NetworkMessage::Error), 3 => data].boxed()
    }
}

fn multiplex() -> impl Strategy<Value = MultiplexMessage> {
    prop_oneof![
        network(false, 300).prop_map(MultiplexMessage::Message),
        (any::<u32>(), any::<u8>(), network(false, 300)).prop_map(|(id, n, message)| {
            MultiplexMessage::Stream(StreamMessage::Header(StreamHeader {
                request_id: StreamId(id),
                num_fragments: n,
                message,
            }))
        }),
        (any::<u32>(), any::<u8>(), payload(300)).prop_map(|(id, f, raw_data)| {
            MultiplexMessage::Stream(StreamMessage::Fragment(StreamFragment {
                request_id: StreamId(id),
                fragment_id: f,
                raw_data,
            }))
        }),
    ]
}

fn encoded(m: &MultiplexMessage) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    v
}

/// Feeds `wire` to a decoder in chunks of the given sizes (cycled) and returns every frame,
/// checking the decoder never holds more than a frame and a chunk.
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> Vec<MultiplexMessage> {
    let mut d = FrameDecoder::new(MAX_FRAME);
    let mut out = Vec::new();
    let mut rest = wire;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        d.extend(chunk);
        assert!(d.buffered() <= MAX_FRAME + 4 + size);
        while let Some(m) = d.decode().unwrap() {
            out.push(m);
        }
    }
    assert!(d.is_idle());
    out
}

fn frame(m: &MultiplexMessage, wire: &mut BytesMut) {
    if let Some(payload) = encode_frame_split(m, MAX_FRAME, wire).unwrap() {
        wire.extend_from_slice(&payload);
    }
}

/// Payload lengths: mostly small, some streamed, some over the limit.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..FRAGMENT, 1 => FRAGMENT..FRAGMENT + 2, 3 => FRAGMENT + 2..LARGEST + 40]
}

/// A recognisable payload: the message's number, then a pattern.
fn numbered(n: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| {
            if i < 4 {
                (n >> (8 * i)) as u8
            } else {
                (i * 13 + n) as u8
            }
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Send(usize),
    Poll(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![2 => length().prop_map(Op::Send), 1 => (0usize..6).prop_map(Op::Poll)]
}

fn config() -> SessionConfig {
    SessionConfig {
        max_frame_size: MAX_FRAME,
        max_message_size: MAX_MESSAGE,
        max_concurrent_outbound_rpcs: 4,
        max_concurrent_inbound_rpcs: 4,
        inbound_rpc_timeout: Duration::from_secs(1),
    }
}

proptest! {
    #[test]
    fn messages_round_trip_canonically(m in multiplex()) {
        let bytes = encoded(&m);
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let decoded = MultiplexMessage::decode(&Bytes::from(bytes.clone())).unwrap();
        prop_assert_eq!(&decoded, &m);
        prop_assert_eq!(encoded(&decoded), bytes.clone());
        let mut head = Vec::new();
        m.encode_head(&mut head);
        head.extend_from_slice(m.payload());
        prop_assert_eq!(head, bytes);
    }

    #[test]
    fn network_messages_round_trip_canonically(m in network(false, 300)) {
        let mut bytes = Vec::new();
        m.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert_eq!(NetworkMessage::decode(&Bytes::from(bytes)), Ok(m));
    }

    /// Decoding is strict: whatever bytes decode are the canonical encoding of the result.
    #[test]
    fn whatever_decodes_is_canonical(
        m in multiplex(),
        edits in prop::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = encoded(&m);
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        if let Ok(decoded) = MultiplexMessage::decode(&Bytes::from(bytes.clone())) {
            prop_assert_eq!(encoded(&decoded), bytes);
        }
    }

    /// OutboundStream → frames → any chunking → FrameDecoder → Reassembler, in order.
    #[test]
    fn streams_survive_framing_and_any_chunking(
        messages in prop::collection::vec(
            length().prop_flat_map(|len| network(true, 1).prop_map(move |m| (m, len))),
            1..20,
        ),
        chunks in prop::collection::vec(1usize..300, 1..20),
    ) {
        let mut wire = BytesMut::new();
        let mut sent = Vec::new();
        for (i, (mut m, len)) in messages.into_iter().enumerate() {
            set_payload(&mut m, numbered(i, len));
            if len <= FRAGMENT {
                frame(&MultiplexMessage::Message(m.clone()), &mut wire);
                sent.push(m);
                continue;
            }
            match OutboundStream::new(StreamId(i as u32), m.clone(), MAX_FRAME, MAX_MESSAGE) {
                Ok(stream) => {
                    for f in stream {
                        frame(&f, &mut wire);
                    }
                    sent.push(m);
                }
                Err(e) => prop_assert_eq!(e, MessageTooLarge { len, max: LARGEST }),
            }
        }
        let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
        let mut received = Vec::new();
        for f in decode_chunked(&wire, &chunks) {
            match f {
                MultiplexMessage::Message(m) => received.push(m),
                MultiplexMessage::Stream(s) => received.extend(r.handle(s).unwrap()),
            }
        }
        prop_assert_eq!(received, sent);
        prop_assert!(!r.is_in_progress());
    }

    /// Session A → frames → any chunking → Session B: every accepted message arrives intact,
    /// in the order its last frame was written, and small (and large) ones keep their order.
    #[test]
    fn sessions_deliver_every_accepted_message(
        ops in prop::collection::vec(op(), 1..40),
        chunks in prop::collection::vec(1usize..300, 1..20),
    ) {
        let now = Instant::now();
        let mut a: Session<(), usize> = Session::new(config());
        let mut b: Session<(), ()> = Session::new(config());
        let mut wire = BytesMut::new();
        let mut accepted = Vec::new();
        let mut written = Vec::new();
        let mut poll = |a: &mut Session<(), usize>, written: &mut Vec<usize>| {
            let t = a.poll_transmit()?;
            frame(&t.message, &mut wire);
            written.extend(t.completes.map(|c| c.tag));
            Some(())
        };
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Send(len) => match a.send(P, numbered(n, len), n) {
                    Ok(()) => accepted.push((n, numbered(n, len))),
                    Err((e, tag)) => {
                        prop_assert_eq!(tag, n);
                        prop_assert_eq!(e, MessageTooLarge { len, max: LARGEST });
                    }
                },
                Op::Poll(k) => for _ in 0..k {
                    poll(&mut a, &mut written);
                },
            }
        }
        while poll(&mut a, &mut written).is_some() {}
        for f in decode_chunked(&wire, &chunks) {
            b.handle_frame(now, f);
        }
        let received: Vec<Bytes> = std::iter::from_fn(|| b.poll_event())
            .map(|e| match e {
                Event::Message { protocol, data } if protocol == P => data,
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        let by_tag = |tag: &usize| accepted.iter().find(|(n, _)| n == tag).unwrap().1.clone();
        let expected: Vec<Bytes> = written.iter().map(by_tag).collect();
        prop_assert_eq!(written.len(), accepted.len());
        prop_assert_eq!(&received, &expected);
        for streamed in [false, true] {
            let class = |tags: Vec<usize>| -> Vec<usize> {
                let is_streamed = |t: &usize| by_tag(t).len() > FRAGMENT;
                tags.into_iter().filter(|t| is_streamed(t) == streamed).collect()
            };
            let sent_order = class(accepted.iter().map(|(n, _)| *n).collect());
            prop_assert_eq!(class(written.clone()), sent_order);
        }
    }
}

/// Sets a message's payload (the crate's own setter is private).
fn set_payload(m: &mut NetworkMessage, data: Bytes) {
    match m {
        NetworkMessage::Error(_) => {}
        NetworkMessage::RpcRequest(r) => r.raw_request = data,
        NetworkMessage::RpcResponse(r) => r.raw_response = data,
        NetworkMessage::DirectSendMsg(d) => d.raw_msg = data,
    }
}
