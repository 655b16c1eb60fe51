//! Streaming of messages too large for one frame: the sending [`OutboundStream`] and the
//! receiving [`Reassembler`].
//!
//! A message whose payload exceeds `F = max_frame_size − 64` goes out as a
//! `StreamMessage::Header` carrying the message with its first `F` payload bytes, then
//! `ceil((len − F) / F)` fragments numbered from 1 (at most 255). The receiver holds one stream
//! at a time and accepts at most `max_message_size / max_frame_size` fragments; the memory a
//! partial stream holds is therefore bounded by `max_message_size`, which is also checked on
//! every fragment.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::message::{
    MultiplexMessage, NetworkMessage, StreamFragment, StreamHeader, StreamId, StreamMessage,
};

/// Bytes reserved in a frame for everything but the payload (the original's
/// `FRAME_OVERHEAD_BYTES`).
pub const FRAME_OVERHEAD: usize = 64;

/// The payload bytes carried by each stream frame.
pub fn fragment_size(max_frame_size: usize) -> usize {
    max_frame_size - FRAME_OVERHEAD
}

/// The fragments a receiver accepts after a header: `max_message_size / max_frame_size`, at
/// most 255 (the original's rule).
fn max_fragments(max_frame_size: usize, max_message_size: usize) -> u8 {
    (max_message_size / max_frame_size.max(1)).min(255) as u8
}

/// The largest payload a sender may send: within `max_message_size`, and small enough that a
/// receiver with the same limits accepts its stream (the header's share plus
/// [`max_fragments`] fragments). Fragments carry `max_frame_size − 64` bytes, so with small
/// frames this is below `max_message_size`; with the defaults (4 MiB, 64 MiB) it is equal.
pub(crate) fn max_payload(max_frame_size: usize, max_message_size: usize) -> usize {
    let fragments = usize::from(max_fragments(max_frame_size, max_message_size));
    max_message_size.min(fragment_size(max_frame_size) * (1 + fragments))
}

/// A message over `max_message_size`, refused before anything was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTooLarge {
    /// The payload length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

impl fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message of {} bytes exceeds the limit of {}",
            self.len, self.max
        )
    }
}

impl std::error::Error for MessageTooLarge {}

/// Cuts one large message into frames. An iterator: the header first, then the fragments.
#[derive(Debug)]
pub struct OutboundStream {
    id: StreamId,
    header: Option<NetworkMessage>,
    rest: Bytes,
    fragment_size: usize,
    next_fragment: u8,
}

impl OutboundStream {
    /// Splits `message` (whose payload must exceed the fragment size) into a stream numbered
    /// `id`.
    ///
    /// # Errors
    ///
    /// [`MessageTooLarge`] if the payload exceeds `max_message_size` or would need more
    /// fragments than a receiver with the same limits accepts (see [`Reassembler::new`]).
    pub fn new(
        id: StreamId,
        mut message: NetworkMessage,
        max_frame_size: usize,
        max_message_size: usize,
    ) -> Result<OutboundStream, MessageTooLarge> {
        let len = message.data_len();
        let fragment_size = fragment_size(max_frame_size);
        let max = max_payload(max_frame_size, max_message_size);
        if len > max {
            return Err(MessageTooLarge { len, max });
        }
        let mut rest = message.data().clone();
        let first = rest.split_to(fragment_size.min(len));
        message.replace_data(first);
        Ok(OutboundStream {
            id,
            header: Some(message),
            rest,
            fragment_size,
            next_fragment: 1,
        })
    }

    /// How many fragments follow the header.
    pub fn num_fragments(&self) -> u8 {
        // At most 255: `new` refuses payloads over 256 fragment sizes.
        let n = self.rest.len().div_ceil(self.fragment_size) + usize::from(self.next_fragment) - 1;
        n as u8
    }

    /// True once every frame has been produced.
    pub fn is_done(&self) -> bool {
        self.header.is_none() && self.rest.is_empty()
    }
}

impl Iterator for OutboundStream {
    type Item = MultiplexMessage;

    fn next(&mut self) -> Option<MultiplexMessage> {
        if let Some(message) = self.header.take() {
            return Some(MultiplexMessage::Stream(StreamMessage::Header(
                StreamHeader {
                    request_id: self.id,
                    num_fragments: self.num_fragments(),
                    message,
                },
            )));
        }
        if self.rest.is_empty() {
            return None;
        }
        let raw_data = self.rest.split_to(self.fragment_size.min(self.rest.len()));
        let fragment_id = self.next_fragment;
        self.next_fragment = self.next_fragment.wrapping_add(1);
        Some(MultiplexMessage::Stream(StreamMessage::Fragment(
            StreamFragment {
                request_id: self.id,
                fragment_id,
                raw_data,
            },
        )))
    }
}

/// Why the reassembler refused a stream frame. The connection stays up in every case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamError {
    /// An `Error` message cannot be streamed.
    ErrorMessageStreamed,
    /// A header announcing no fragments.
    NoFragments,
    /// A header announcing more fragments than `max_message_size / max_frame_size`.
    TooManyFragments {
        /// Announced.
        num_fragments: u8,
        /// Allowed.
        max: u8,
    },
    /// A valid header arrived while another stream was in progress: the old one was discarded
    /// and the new one is now in progress.
    Replaced {
        /// The discarded stream.
        old: StreamId,
    },
    /// A fragment with no stream in progress.
    NoStream,
    /// A fragment of another stream.
    WrongStream {
        /// The stream in progress.
        expected: StreamId,
        /// The fragment's stream.
        got: StreamId,
    },
    /// A fragment out of sequence (including id 0, a duplicate or past the end).
    OutOfOrder {
        /// The id expected next.
        expected: u8,
        /// The fragment's id.
        got: u8,
    },
    /// The reassembled payload would exceed `max_message_size`; the stream was discarded.
    TooLarge(MessageTooLarge),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::ErrorMessageStreamed => f.write_str("error messages cannot be streamed"),
            StreamError::NoFragments => f.write_str("stream header announces no fragments"),
            StreamError::TooManyFragments { num_fragments, max } => {
                write!(
                    f,
                    "stream header announces {num_fragments} fragments, limit {max}"
                )
            }
            StreamError::Replaced { old } => {
                write!(f, "discarding existing stream {} for a new header", old.0)
            }
            StreamError::NoStream => f.write_str("fragment with no stream in progress"),
            StreamError::WrongStream { expected, got } => {
                write!(
                    f,
                    "fragment of stream {} while stream {} is in progress",
                    got.0, expected.0
                )
            }
            StreamError::OutOfOrder { expected, got } => {
                write!(f, "fragment {got} out of order, expected {expected}")
            }
            StreamError::TooLarge(e) => write!(f, "stream too large: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl StreamError {
    /// True if this refusal cost a whole message: a refused header (the message it announced)
    /// or a stream in progress that was discarded (replaced by a new header, or grown over
    /// `max_message_size`). A refused fragment of a stream that goes on, or of one whose loss
    /// was already counted, costs no further message. Counting these counts each message lost
    /// to bad stream frames once, however many of its frames were refused.
    pub fn loses_message(&self) -> bool {
        match self {
            StreamError::ErrorMessageStreamed
            | StreamError::NoFragments
            | StreamError::TooManyFragments { .. }
            | StreamError::Replaced { .. }
            | StreamError::TooLarge(_) => true,
            StreamError::NoStream
            | StreamError::WrongStream { .. }
            | StreamError::OutOfOrder { .. } => false,
        }
    }
}

#[derive(Debug)]
struct InboundStream {
    id: StreamId,
    num_fragments: u8,
    received: u8,
    message: NetworkMessage,
    parts: Vec<Bytes>,
    len: usize,
}

/// Rebuilds streamed messages. Holds at most one stream in progress.
#[derive(Debug)]
pub struct Reassembler {
    current: Option<InboundStream>,
    max_fragments: u8,
    max_message_size: usize,
}

impl Reassembler {
    /// A reassembler accepting `max_message_size / max_frame_size` fragments per stream.
    pub fn new(max_frame_size: usize, max_message_size: usize) -> Reassembler {
        Reassembler {
            current: None,
            max_fragments: max_fragments(max_frame_size, max_message_size),
            max_message_size,
        }
    }

    /// True while a stream is in progress.
    pub fn is_in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one stream frame. Returns the whole message when its last fragment arrives.
    ///
    /// # Errors
    ///
    /// A [`StreamError`]; the stream in progress is kept, except for
    /// [`StreamError::Replaced`] (the new stream replaced it) and [`StreamError::TooLarge`]
    /// (it was discarded).
    pub fn handle(&mut self, msg: StreamMessage) -> Result<Option<NetworkMessage>, StreamError> {
        match msg {
            StreamMessage::Header(h) => self.header(h).map(|()| None),
            StreamMessage::Fragment(f) => self.fragment(f),
        }
    }

    fn header(&mut self, h: StreamHeader) -> Result<(), StreamError> {
        if matches!(h.message, NetworkMessage::Error(_)) {
            return Err(StreamError::ErrorMessageStreamed);
        }
        if h.num_fragments == 0 {
            return Err(StreamError::NoFragments);
        }
        if h.num_fragments > self.max_fragments {
            return Err(StreamError::TooManyFragments {
                num_fragments: h.num_fragments,
                max: self.max_fragments,
            });
        }
        let mut message = h.message;
        let first = message.replace_data(Bytes::new());
        let len = first.len();
        let old = self.current.replace(InboundStream {
            id: h.request_id,
            num_fragments: h.num_fragments,
            received: 0,
            message,
            parts: vec![first],
            len,
        });
        match old {
            Some(old) => Err(StreamError::Replaced { old: old.id }),
            None => Ok(()),
        }
    }

    fn fragment(&mut self, f: StreamFragment) -> Result<Option<NetworkMessage>, StreamError> {
        let s = self.current.as_mut().ok_or(StreamError::NoStream)?;
        if f.request_id != s.id {
            return Err(StreamError::WrongStream {
                expected: s.id,
                got: f.request_id,
            });
        }
        let expected = s.received + 1;
        if f.fragment_id != expected {
            return Err(StreamError::OutOfOrder {
                expected,
                got: f.fragment_id,
            });
        }
        let len = s.len + f.raw_data.len();
        if len > self.max_message_size {
            self.current = None;
            return Err(StreamError::TooLarge(MessageTooLarge {
                len,
                max: self.max_message_size,
            }));
        }
        s.len = len;
        s.received = expected;
        s.parts.push(f.raw_data);
        if s.received < s.num_fragments {
            return Ok(None);
        }
        // Checked just above: the stream is complete, take it out.
        let mut s = self.current.take().expect("stream in progress");
        let mut data = BytesMut::with_capacity(s.len);
        for part in &s.parts {
            data.extend_from_slice(part);
        }
        s.message.replace_data(data.freeze());
        Ok(Some(s.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::{DirectSendMsg, ProtocolId};

    const FRAME: usize = 64 + 10;

    fn direct(len: usize) -> NetworkMessage {
        NetworkMessage::DirectSendMsg(DirectSendMsg {
            protocol_id: ProtocolId(1),
            priority: 0,
            raw_msg: (0..len).map(|i| i as u8).collect::<Vec<_>>().into(),
        })
    }

    fn frames(len: usize) -> Vec<StreamMessage> {
        OutboundStream::new(StreamId(7), direct(len), FRAME, 10 * FRAME)
            .unwrap()
            .map(|m| match m {
                MultiplexMessage::Stream(s) => s,
                MultiplexMessage::Message(_) => panic!("not a stream frame"),
            })
            .collect()
    }

    fn fragment(id: u32, fragment_id: u8) -> StreamMessage {
        StreamMessage::Fragment(StreamFragment {
            request_id: StreamId(id),
            fragment_id,
            raw_data: Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn fragments_then_reassembles() {
        for len in [11, 20, 21, 95] {
            let frames = frames(len);
            assert_eq!(frames.len(), 1 + (len - 10).div_ceil(10), "len {len}");
            let StreamMessage::Header(h) = &frames[0] else {
                panic!()
            };
            assert_eq!(usize::from(h.num_fragments), frames.len() - 1);
            assert_eq!(h.message.data_len(), 10);
            let mut r = Reassembler::new(FRAME, 10 * FRAME);
            let mut out = None;
            for f in frames {
                assert!(out.is_none());
                out = r.handle(f).unwrap();
            }
            assert_eq!(out, Some(direct(len)));
            assert!(!r.is_in_progress());
        }
    }

    #[test]
    fn refuses_oversized_message() {
        // A receiver with these limits takes the header and 10 fragments of 10 bytes.
        assert!(OutboundStream::new(StreamId(0), direct(110), FRAME, 10 * FRAME).is_ok());
        let err = OutboundStream::new(StreamId(0), direct(111), FRAME, 10 * FRAME);
        assert_eq!(err.unwrap_err(), MessageTooLarge { len: 111, max: 110 });
    }

    #[test]
    fn bad_fragments_keep_the_stream() {
        let frames = frames(35); // header + 3 fragments
        let mut r = Reassembler::new(FRAME, 10 * FRAME);
        assert_eq!(r.handle(fragment(7, 1)), Err(StreamError::NoStream));
        r.handle(frames[0].clone()).unwrap();
        let cases = [
            (
                fragment(8, 1),
                StreamError::WrongStream {
                    expected: StreamId(7),
                    got: StreamId(8),
                },
            ),
            (
                fragment(7, 0),
                StreamError::OutOfOrder {
                    expected: 1,
                    got: 0,
                },
            ),
            (
                fragment(7, 2),
                StreamError::OutOfOrder {
                    expected: 1,
                    got: 2,
                },
            ),
        ];
        for (f, err) in cases {
            assert_eq!(r.handle(f), Err(err));
        }
        r.handle(frames[1].clone()).unwrap();
        assert_eq!(
            r.handle(frames[1].clone()),
            Err(StreamError::OutOfOrder {
                expected: 2,
                got: 1
            })
        );
        r.handle(frames[2].clone()).unwrap();
        assert_eq!(r.handle(frames[3].clone()), Ok(Some(direct(35))));
        assert_eq!(r.handle(fragment(7, 4)), Err(StreamError::NoStream));
    }

    #[test]
    fn header_checks_and_replacement() {
        let mut r = Reassembler::new(FRAME, 3 * FRAME);
        let header = |id, n| {
            StreamMessage::Header(StreamHeader {
                request_id: StreamId(id),
                num_fragments: n,
                message: direct(5),
            })
        };
        assert_eq!(r.handle(header(1, 0)), Err(StreamError::NoFragments));
        assert_eq!(
            r.handle(header(1, 4)),
            Err(StreamError::TooManyFragments {
                num_fragments: 4,
                max: 3
            })
        );
        assert!(!r.is_in_progress());
        assert_eq!(r.handle(header(1, 2)), Ok(None));
        assert_eq!(
            r.handle(header(2, 1)),
            Err(StreamError::Replaced { old: StreamId(1) })
        );
        let mut expected = direct(5);
        expected.replace_data(Bytes::from_static(&[0, 1, 2, 3, 4, b'x']));
        assert_eq!(r.handle(fragment(2, 1)), Ok(Some(expected)));
    }

    #[test]
    fn total_size_is_bounded() {
        let mut r = Reassembler::new(FRAME, 2 * FRAME);
        let big = |id| {
            StreamMessage::Fragment(StreamFragment {
                request_id: StreamId(1),
                fragment_id: id,
                raw_data: vec![0; FRAME].into(),
            })
        };
        r.handle(StreamMessage::Header(StreamHeader {
            request_id: StreamId(1),
            num_fragments: 2,
            message: direct(FRAME + 1),
        }))
        .unwrap();
        assert!(matches!(r.handle(big(1)), Err(StreamError::TooLarge(_))));
        assert!(!r.is_in_progress());
    }
}
