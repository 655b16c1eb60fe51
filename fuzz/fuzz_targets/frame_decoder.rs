//! Arbitrary bytes, in arbitrary chunks, into `FrameDecoder`.
//!
//! Input: one control byte (the frame limit and the chunk size), then the byte stream.
//! Checks: decoding never panics; chunking never changes the outcome (the same stream fed in
//! one piece yields the same frames and errors); every decoded message re-encodes to exactly
//! the bytes it came from (decoding is strict, so encoding is its inverse) and within the
//! limit; `encode_frame_split` produces the same bytes; nothing is decoded after a fatal error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use syncpeer::proto::codec::{encode_frame, encode_frame_split};
use syncpeer::proto::{FrameDecoder, FrameError, MultiplexMessage};

const LIMITS: [usize; 4] = [16, 128, 4096, 1 << 20];

type Outcome = Result<MultiplexMessage, FrameError>;

/// Decodes everything buffered; stops for good at a fatal error.
fn drain(d: &mut FrameDecoder, out: &mut Vec<Outcome>) -> bool {
    loop {
        match d.decode() {
            Ok(None) => return true,
            Ok(Some(m)) => out.push(Ok(m)),
            Err(e) => {
                let fatal = e.is_fatal();
                out.push(Err(e));
                if fatal {
                    return false;
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let max = LIMITS[usize::from(ctl & 3)];
    let chunk = 1 + usize::from(ctl >> 2);

    // In chunks.
    let mut chunked = Vec::new();
    let mut d = FrameDecoder::new(max);
    for piece in stream.chunks(chunk) {
        d.extend(piece);
        if !drain(&mut d, &mut chunked) {
            break;
        }
    }

    // In one piece, recording where each frame came from.
    let mut whole = Vec::new();
    let mut d = FrameDecoder::new(max);
    d.extend(stream);
    let mut start = 0;
    loop {
        let before = whole.len();
        let go_on = match d.decode() {
            Ok(None) => false,
            Ok(Some(m)) => {
                whole.push(Ok(m));
                true
            }
            Err(e) => {
                let fatal = e.is_fatal();
                whole.push(Err(e));
                !fatal
            }
        };
        if whole.len() > before {
            let end = stream.len() - d.buffered();
            if let Some(Ok(m)) = whole.last() {
                check_round_trip(m, max, &stream[start..end]);
            }
            start = end;
        }
        if !go_on {
            break;
        }
    }
    assert_eq!(chunked, whole, "chunking changed the outcome");
});

fn check_round_trip(m: &MultiplexMessage, max: usize, original: &[u8]) {
    let mut out = BytesMut::new();
    encode_frame(m, max, &mut out).expect("a decoded message re-encodes within the limit");
    assert_eq!(&out[..], original, "encode(decode(x)) != x");
    let mut head = BytesMut::new();
    let rest = encode_frame_split(m, max, &mut head).expect("split encoding within the limit");
    head.extend_from_slice(&rest.unwrap_or_default());
    assert_eq!(head, out, "split and whole encodings differ");
    assert_eq!(m.encoded_len() + 4, out.len());
}
