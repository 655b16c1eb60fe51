//! Wire vectors and strict-decoding cases for the message layout.

use super::*;

fn enc_net(m: &NetworkMessage) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut v);
    assert_eq!(v.len(), m.encoded_len());
    v
}

fn enc_stream(s: StreamMessage) -> Vec<u8> {
    let m = MultiplexMessage::Stream(s);
    let mut v = Vec::new();
    m.encode(&mut v);
    assert_eq!(v.len(), m.encoded_len());
    assert_eq!(MultiplexMessage::decode(&Bytes::from(v.clone())), Ok(m));
    v[1..].to_vec()
}

fn hello() -> NetworkMessage {
    NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(2),
        priority: 0,
        raw_msg: Bytes::from_static(b"hello world"),
    })
}

#[test]
fn error_code_vector() {
    let m = NetworkMessage::Error(ErrorCode::ParsingError {
        message: 9,
        protocol: 5,
    });
    let bytes = enc_net(&m);
    assert_eq!(&bytes[1..], [0x00, 0x09, 0x05]);
    assert_eq!(NetworkMessage::decode(&Bytes::from(bytes)), Ok(m));
}

#[test]
fn rpc_request_vector() {
    let m = NetworkMessage::RpcRequest(RpcRequest {
        protocol_id: ProtocolId(0),
        request_id: RequestId(25),
        priority: 0,
        raw_request: Bytes::from_static(&[0, 1, 2, 3]),
    });
    let expected = [0x01, 0x00, 0x19, 0, 0, 0, 0x00, 0x04, 0, 1, 2, 3];
    assert_eq!(enc_net(&m), expected);
    assert_eq!(
        NetworkMessage::decode(&Bytes::copy_from_slice(&expected)),
        Ok(m)
    );
}

#[test]
fn stream_vectors() {
    let header = StreamMessage::Header(StreamHeader {
        request_id: StreamId(42),
        num_fragments: 10,
        message: hello(),
    });
    let mut expected = vec![0x00, 0x2a, 0, 0, 0, 0x0a, 0x03, 0x02, 0x00, 0x0b];
    expected.extend_from_slice(b"hello world");
    assert_eq!(enc_stream(header), expected);
    let fragment = StreamMessage::Fragment(StreamFragment {
        request_id: StreamId(42),
        fragment_id: 254,
        raw_data: Bytes::from_static(&[11, 22, 33]),
    });
    assert_eq!(
        enc_stream(fragment),
        [0x01, 0x2a, 0, 0, 0, 0xfe, 0x03, 0x0b, 0x16, 0x21]
    );
}

#[test]
fn not_supported_round_trips() {
    for kind in [
        NotSupportedKind::RpcRequest,
        NotSupportedKind::DirectSendMsg,
    ] {
        let m = NetworkMessage::Error(ErrorCode::NotSupported(kind, ProtocolId(200)));
        let bytes = enc_net(&m);
        assert_eq!(
            bytes[..3],
            [0, 1, (kind == NotSupportedKind::DirectSendMsg) as u8]
        );
        assert_eq!(bytes[3..], [0xc8, 0x01]);
        assert_eq!(NetworkMessage::decode(&Bytes::from(bytes)), Ok(m));
    }
}

#[test]
fn uleb_lengths_match_reference() {
    let mut v = Vec::new();
    put_uleb(&mut v, 4_194_240);
    assert_eq!(v, [0xc0, 0xff, 0xff, 0x01]);
    v.clear();
    put_uleb(&mut v, 4_194_304);
    assert_eq!(v, [0x80, 0x80, 0x80, 0x02]);
    for x in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, u32::MAX] {
        v.clear();
        put_uleb(&mut v, x);
        assert_eq!(v.len(), uleb_len(x), "{x}");
        let b = Bytes::from(v.clone());
        let mut r = Reader::shared(&b);
        assert_eq!(r.uleb(), Ok(x));
    }
}

#[test]
fn strict_decoding_rejects() {
    let cases: &[(&[u8], DecodeError)] = &[
        (&[], DecodeError::Truncated),
        (
            &[0x02],
            DecodeError::UnknownVariant {
                kind: "MultiplexMessage",
                index: 2,
            },
        ),
        (
            &[0x00, 0x04],
            DecodeError::UnknownVariant {
                kind: "NetworkMessage",
                index: 4,
            },
        ),
        (&[0x80, 0x00], DecodeError::NonCanonicalUleb),
        (
            &[0x00, 0x03, 0x82, 0x00, 0x00, 0x00],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x80, 0x02, 0x00, 0x00],
            DecodeError::ProtocolOutOfRange(256),
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0x02, 0xaa],
            DecodeError::Truncated,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0x00, 0xaa],
            DecodeError::TrailingBytes(1),
        ),
        (&[0x00, 0x00, 0x00, 0x09], DecodeError::Truncated),
        (
            &[0x00, 0x03, 0x02, 0x00, 0xff, 0xff, 0xff, 0xff, 0x0f],
            DecodeError::Truncated,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0xff, 0xff, 0xff, 0xff, 0x7f],
            DecodeError::NonCanonicalUleb,
        ),
        (
            &[0x00, 0x03, 0x02, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            DecodeError::NonCanonicalUleb,
        ),
    ];
    for (bytes, err) in cases {
        let got = MultiplexMessage::decode(&Bytes::copy_from_slice(bytes));
        assert_eq!(got, Err(*err), "{bytes:02x?}");
    }
}

#[test]
fn decoded_payload_shares_the_frame_buffer() {
    let m = MultiplexMessage::Message(hello());
    let mut v = Vec::new();
    m.encode(&mut v);
    let frame = Bytes::from(v);
    let MultiplexMessage::Message(NetworkMessage::DirectSendMsg(d)) =
        MultiplexMessage::decode(&frame).unwrap()
    else {
        panic!("wrong variant")
    };
    assert_eq!(d.raw_msg.as_ptr(), frame[5..].as_ptr());
}

/// The strict path alone, as `decode_copied` was before its fast path.
fn decode_strict(buf: &[u8]) -> Result<MultiplexMessage, DecodeError> {
    MultiplexMessage::read(Reader {
        buf,
        owner: None,
        pos: 0,
    })
}

#[test]
fn the_direct_send_fast_path_agrees_with_the_strict_path() {
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 127, 128, 300, 16_383, 16_384] {
        for protocol in [0u8, 2, 127, 128, 255] {
            let m = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(protocol),
                priority: 7,
                raw_msg: vec![5; len].into(),
            }));
            let mut v = Vec::new();
            m.encode(&mut v);
            cases.push(v.clone());
            // One byte short, one byte long.
            cases.push(v[..v.len() - 1].to_vec());
            let mut long = v.clone();
            long.push(0);
            cases.push(long);
        }
    }
    // Non-canonical lengths: 1 written in two bytes, and a zero last group.
    cases.push(vec![0, 3, 2, 0, 0x81, 0x00, 9]);
    cases.push(vec![0, 3, 2, 0, 0x80, 0x00]);
    for case in &cases {
        let fast = MultiplexMessage::direct_send_fast(case);
        if let Some(fast) = fast {
            assert_eq!(Ok(fast), decode_strict(case), "{case:?}");
        }
        assert_eq!(
            MultiplexMessage::decode_copied(case),
            decode_strict(case),
            "{case:?}"
        );
    }
}

proptest::proptest! {
    #[test]
    fn the_fast_path_never_accepts_what_the_strict_path_refuses(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        head in proptest::prelude::any::<bool>(),
    ) {
        // Half of the inputs start like a direct send, so the fast path is really tried.
        let mut case = bytes;
        if head && case.len() >= 2 {
            case[0] = 0;
            case[1] = 3;
        }
        if let Some(fast) = MultiplexMessage::direct_send_fast(&case) {
            proptest::prop_assert_eq!(Ok(fast), decode_strict(&case));
        }
        proptest::prop_assert_eq!(MultiplexMessage::decode_copied(&case), decode_strict(&case));
    }
}
