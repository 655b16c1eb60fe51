//! Arbitrary sequences of stream frames into `Reassembler`, checked against a model.
//!
//! Input: one control byte (frame and message limits), then a byte stream decoded with
//! `FrameDecoder`; every `Stream` frame goes to the reassembler (other frames are skipped).
//! The model keeps the payload a stream in progress has accepted so far. Checks: no panic;
//! a completed message carries exactly the header's payload followed by the accepted
//! fragments', and never more than `max_message_size`; an error leaves the stream in
//! progress as documented (kept, replaced by the new header, or discarded when too large).
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncpeer::proto::{FrameDecoder, MultiplexMessage, Reassembler, StreamError, StreamMessage};

/// (max_frame_size, max_message_size) pairs, as a validated `PeerConfig` could have them.
const LIMITS: [(usize, usize); 4] = [(65, 65 * 4), (100, 100 * 3), (128, 128 * 16), (4096, 1 << 20)];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, stream)) = data.split_first() else {
        return;
    };
    let (max_frame, max_message) = LIMITS[usize::from(ctl & 3)];
    let mut decoder = FrameDecoder::new(max_frame);
    decoder.extend(stream);
    let mut r = Reassembler::new(max_frame, max_message);
    // The payload of the stream in progress, as far as accepted.
    let mut model: Option<Vec<u8>> = None;
    loop {
        let s = match decoder.decode() {
            Ok(None) => break,
            Ok(Some(MultiplexMessage::Stream(s))) => s,
            Ok(Some(MultiplexMessage::Message(_))) => continue,
            Err(e) if e.is_fatal() => break,
            Err(_) => continue,
        };
        let (incoming, is_header) = match &s {
            StreamMessage::Header(h) => (h.message.data().to_vec(), true),
            StreamMessage::Fragment(f) => (f.raw_data.to_vec(), false),
        };
        match r.handle(s) {
            Ok(None) => {
                if is_header {
                    assert!(model.is_none(), "a header replaced a stream without saying so");
                    model = Some(incoming);
                } else {
                    model.as_mut().expect("a fragment accepted with no stream").extend(incoming);
                }
            }
            Ok(Some(m)) => {
                assert!(!is_header, "a header alone completed a message");
                let mut expected = model.take().expect("a message completed with no stream");
                expected.extend(incoming);
                assert_eq!(m.data()[..], expected[..], "reassembled payload differs");
                assert!(m.data_len() <= max_message, "message over max_message_size");
            }
            Err(StreamError::Replaced { .. }) => {
                assert!(model.is_some(), "replaced a stream that was not there");
                model = Some(incoming);
            }
            Err(StreamError::TooLarge(_)) => model = None,
            Err(_) => {}
        }
        assert_eq!(r.is_in_progress(), model.is_some(), "in-progress state differs");
    }
});
