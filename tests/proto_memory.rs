//! What received messages cost in memory once the application keeps them: a payload handed out
//! by the decoder must not pin a receive buffer larger than itself. Measured exactly, with a
//! global allocator that counts the bytes live (this binary holds only this test, so nothing
//! else allocates meanwhile).

use bytes::{Bytes, BytesMut};
use cap::Cap;
use syncpeer::proto::codec::encode_frame;
use syncpeer::proto::{DirectSendMsg, FrameDecoder, MultiplexMessage, NetworkMessage, ProtocolId};

/// Counts the bytes live (no limit).
#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

fn frame(len: usize) -> BytesMut {
    let msg = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(2),
        priority: 0,
        raw_msg: vec![7; len].into(),
    }));
    let mut out = BytesMut::new();
    encode_frame(&msg, 8 << 20, &mut out).expect("fits");
    out
}

fn payload(m: MultiplexMessage) -> Bytes {
    match m {
        MultiplexMessage::Message(NetworkMessage::DirectSendMsg(d)) => d.raw_msg,
        other => panic!("unexpected {other:?}"),
    }
}

/// Small messages (just over the size that is copied) arrive between 4 MiB ones; the
/// application keeps every small one and drops every large one. What stays live must be close
/// to the kept payloads, not a 4 MiB buffer per kept message (190 MiB before the fix).
#[test]
fn kept_small_messages_do_not_pin_large_receive_buffers() {
    const PAIRS: usize = 48;
    const SMALL: usize = 1100;
    const LARGE: usize = 4 << 20;
    let small = frame(SMALL);
    let large = frame(LARGE);
    let mut decoder = FrameDecoder::new(8 << 20);
    let mut kept = Vec::with_capacity(PAIRS);
    let before = ALLOC.allocated();
    for _ in 0..PAIRS {
        // As the reader feeds it: 64 KiB reads that cut frames anywhere.
        let mut stream = small.to_vec();
        stream.extend_from_slice(&large);
        for chunk in stream.chunks(64 * 1024) {
            decoder.extend(chunk);
            while let Some(m) = decoder.decode().expect("well formed") {
                let data = payload(m);
                if data.len() == SMALL {
                    kept.push(data);
                }
            }
        }
    }
    drop(decoder);
    let retained = ALLOC.allocated() - before;
    let payloads = PAIRS * SMALL;
    assert_eq!(kept.len(), PAIRS);
    assert!(
        retained <= 4 * payloads,
        "{PAIRS} kept messages of {SMALL} bytes hold {retained} bytes"
    );
}
