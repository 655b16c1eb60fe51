//! The wire format against the known vectors of DESIGN.md, in both directions, and the frame
//! decoder against every chunking of an encoded stream.

use bytes::{Bytes, BytesMut};
use syncpeer::proto::{
    DirectSendMsg, ErrorCode, FrameDecoder, MultiplexMessage, NetworkMessage, NotSupportedKind,
    ProtocolId, RequestId, RpcRequest, RpcResponse, StreamFragment, StreamHeader, StreamId,
    StreamMessage, encode_frame, encode_frame_split,
};

const MAX_FRAME: usize = 4096;

fn hello() -> NetworkMessage {
    NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(2),
        priority: 0,
        raw_msg: Bytes::from_static(b"hello world"),
    })
}

fn with_hello(head: &[u8]) -> Vec<u8> {
    let mut v = head.to_vec();
    v.extend_from_slice(b"hello world");
    v
}

/// Checks `msg` encodes to `bytes` and `bytes` decodes to `msg`, as a `NetworkMessage` and
/// inside a `MultiplexMessage::Message` and a whole frame.
#[track_caller]
fn network_vector(msg: NetworkMessage, bytes: &[u8]) {
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(out, bytes, "encoding of {msg:?}");
    assert_eq!(msg.encoded_len(), bytes.len());
    assert_eq!(
        NetworkMessage::decode(&Bytes::copy_from_slice(bytes)),
        Ok(msg.clone())
    );
    let mut inner = vec![0x00];
    inner.extend_from_slice(bytes);
    multiplex_vector(MultiplexMessage::Message(msg), &inner);
}

/// Checks `msg` encodes to `bytes` (without the length prefix) and back, and as a frame.
#[track_caller]
fn multiplex_vector(msg: MultiplexMessage, bytes: &[u8]) {
    let mut out = Vec::new();
    msg.encode(&mut out);
    assert_eq!(out, bytes, "encoding of {msg:?}");
    assert_eq!(
        MultiplexMessage::decode(&Bytes::copy_from_slice(bytes)),
        Ok(msg.clone())
    );
    let mut frame = (bytes.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    frame_vector(msg, &frame);
}

/// Checks a whole frame, prefix included, both ways.
#[track_caller]
fn frame_vector(msg: MultiplexMessage, frame: &[u8]) {
    let mut out = BytesMut::new();
    encode_frame(&msg, MAX_FRAME, &mut out).unwrap();
    assert_eq!(&out[..], frame);
    let mut d = FrameDecoder::new(MAX_FRAME);
    d.extend(frame);
    assert_eq!(d.decode(), Ok(Some(msg)));
    assert_eq!(d.decode(), Ok(None));
    assert!(d.is_idle());
}

#[test]
fn parsing_error_vector() {
    let msg = NetworkMessage::Error(ErrorCode::ParsingError {
        message: 9,
        protocol: 5,
    });
    // `00` NetworkMessage::Error, then the ErrorCode vector `00 09 05`.
    network_vector(msg, &[0x00, 0x00, 0x09, 0x05]);
}

#[test]
fn rpc_request_vector() {
    let msg = NetworkMessage::RpcRequest(RpcRequest {
        protocol_id: ProtocolId(0),
        request_id: RequestId(25),
        priority: 0,
        raw_request: Bytes::from_static(&[0, 1, 2, 3]),
    });
    network_vector(
        msg,
        &[
            0x01, 0x00, 0x19, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x01, 0x02, 0x03,
        ],
    );
}

#[test]
fn direct_send_whole_frame_vector() {
    let frame = with_hello(&[0x00, 0x00, 0x00, 0x10, 0x00, 0x03, 0x02, 0x00, 0x0b]);
    frame_vector(MultiplexMessage::Message(hello()), &frame);
    network_vector(hello(), &frame[5..]);
}

#[test]
fn stream_header_vector() {
    let msg = MultiplexMessage::Stream(StreamMessage::Header(StreamHeader {
        request_id: StreamId(42),
        num_fragments: 10,
        message: hello(),
    }));
    // `01` MultiplexMessage::Stream, then the StreamMessage vector.
    let bytes = with_hello(&[
        0x01, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x0a, 0x03, 0x02, 0x00, 0x0b,
    ]);
    multiplex_vector(msg, &bytes);
}

#[test]
fn stream_fragment_vector() {
    let msg = MultiplexMessage::Stream(StreamMessage::Fragment(StreamFragment {
        request_id: StreamId(42),
        fragment_id: 254,
        raw_data: Bytes::from_static(&[11, 22, 33]),
    }));
    multiplex_vector(
        msg,
        &[
            0x01, 0x01, 0x2a, 0x00, 0x00, 0x00, 0xfe, 0x03, 0x0b, 0x16, 0x21,
        ],
    );
}

/// Vectors written from the layout table for the rows the original's tests do not cover.
#[test]
fn layout_table_vectors() {
    let response = NetworkMessage::RpcResponse(RpcResponse {
        request_id: RequestId(0x0403_0201),
        priority: 0,
        raw_response: Bytes::from_static(&[0xaa]),
    });
    network_vector(response, &[0x02, 0x01, 0x02, 0x03, 0x04, 0x00, 0x01, 0xaa]);
    let rpc = NotSupportedKind::RpcRequest;
    let not_supported = NetworkMessage::Error(ErrorCode::NotSupported(rpc, ProtocolId(5)));
    network_vector(not_supported, &[0x00, 0x01, 0x00, 0x05]);
    let direct = NotSupportedKind::DirectSendMsg;
    let not_supported = NetworkMessage::Error(ErrorCode::NotSupported(direct, ProtocolId(200)));
    network_vector(not_supported, &[0x00, 0x01, 0x01, 0xc8, 0x01]);
    // Protocol ids from 128 take two ULEB128 bytes; lengths from 128 too.
    let mut bytes = vec![0x03, 0x80, 0x01, 0x00, 0x80, 0x01];
    bytes.extend_from_slice(&[0x5a; 128]);
    let direct = NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(128),
        priority: 0,
        raw_msg: vec![0x5a; 128].into(),
    });
    network_vector(direct, &bytes);
}

/// Messages of every kind and with lengths around the ULEB128 and inline-payload boundaries.
fn assorted() -> Vec<MultiplexMessage> {
    let mut out = Vec::new();
    for (i, len) in [0usize, 1, 11, 127, 128, 300, 1023, 1024, 2000]
        .into_iter()
        .enumerate()
    {
        let data: Bytes = (0..len)
            .map(|b| (b * 7 + i) as u8)
            .collect::<Vec<_>>()
            .into();
        let i = i as u32;
        out.push(MultiplexMessage::Message(NetworkMessage::DirectSendMsg(
            DirectSendMsg {
                protocol_id: ProtocolId((i * 31) as u8),
                priority: 0,
                raw_msg: data.clone(),
            },
        )));
        out.push(MultiplexMessage::Message(NetworkMessage::RpcRequest(
            RpcRequest {
                protocol_id: ProtocolId(3),
                request_id: RequestId(u32::MAX - i),
                priority: 1,
                raw_request: data.clone(),
            },
        )));
        out.push(MultiplexMessage::Message(NetworkMessage::RpcResponse(
            RpcResponse {
                request_id: RequestId(i << 20),
                priority: 0,
                raw_response: data.clone(),
            },
        )));
        out.push(MultiplexMessage::Stream(StreamMessage::Header(
            StreamHeader {
                request_id: StreamId(i),
                num_fragments: 2,
                message: hello(),
            },
        )));
        out.push(MultiplexMessage::Stream(StreamMessage::Fragment(
            StreamFragment {
                request_id: StreamId(i),
                fragment_id: i as u8 + 1,
                raw_data: data,
            },
        )));
    }
    out.push(MultiplexMessage::Message(NetworkMessage::Error(
        ErrorCode::ParsingError {
            message: 0xff,
            protocol: 0,
        },
    )));
    out
}

/// The whole stream as the writer produces it (vectored frames, glued back together).
fn wire(messages: &[MultiplexMessage]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in messages {
        if let Some(payload) = encode_frame_split(m, MAX_FRAME, &mut out).unwrap() {
            out.extend_from_slice(&payload);
        }
    }
    let mut whole = BytesMut::new();
    for m in messages {
        encode_frame(m, MAX_FRAME, &mut whole).unwrap();
    }
    assert_eq!(out, whole, "split and whole encodings agree");
    out.to_vec()
}

fn drain(d: &mut FrameDecoder, out: &mut Vec<MultiplexMessage>) {
    while let Some(m) = d.decode().unwrap() {
        out.push(m);
    }
}

#[test]
fn every_split_point_yields_the_same_messages() {
    let messages = assorted();
    let bytes = wire(&messages);
    for at in 0..=bytes.len() {
        let mut d = FrameDecoder::new(MAX_FRAME);
        let mut got = Vec::new();
        d.extend(&bytes[..at]);
        drain(&mut d, &mut got);
        d.extend(&bytes[at..]);
        drain(&mut d, &mut got);
        assert!(got == messages, "split at {at}");
        assert!(d.is_idle());
    }
}

#[test]
fn one_byte_at_a_time_yields_the_same_messages() {
    let messages = assorted();
    let bytes = wire(&messages);
    let mut d = FrameDecoder::new(MAX_FRAME);
    let mut got = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        d.extend(std::slice::from_ref(b));
        drain(&mut d, &mut got);
        assert!(d.buffered() <= MAX_FRAME, "byte {i}");
    }
    assert_eq!(got, messages);
    assert!(d.is_idle());
}
