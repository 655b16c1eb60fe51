//! Framing: a `u32` big-endian length prefix, then one BCS-encoded [`MultiplexMessage`].
//!
//! This file owns the frame boundary: [`FrameDecoder`], an explicit two-state machine that
//! accepts bytes in any chunking, and [`encode_frame`]. The length prefix counts the message
//! bytes only (not itself) and is checked against `max_frame_size` before any buffer is reserved,
//! so a hostile prefix costs nothing. Example, a whole frame:
//!
//! ```text
//! 00 00 00 10                      length 16
//! 00                               MultiplexMessage::Message
//! 03 02 00                         DirectSendMsg, protocol 2, priority 0
//! 0b 68 65 6c 6c 6f 20 77 6f 72 6c 64   11 bytes "hello world"
//! ```

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::message::{DecodeError, MultiplexMessage, ProtocolId, put_uleb, uleb_len};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// How many bytes of an undecodable frame are kept for the error (as the original does).
const KEPT_PREFIX: usize = 8;

/// Frames shorter than this are decoded into payloads of their own (copied, see
/// [`MultiplexMessage::decode_copied`] for why); longer ones are collected in a buffer of their
/// own, of exactly their length, and their payloads share it. No payload handed out ever shares
/// memory with another frame, so a small message the application keeps pins only its own frame,
/// never a multi-megabyte receive buffer.
const COPY_FRAMES_BELOW: usize = 1024;

/// A frame the decoder could not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is over `max_frame_size`. The stream cannot be resynchronised: fatal.
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame was delimited correctly but its contents did not decode. The decoder has
    /// skipped it and can go on; the original answers with `ErrorCode::ParsingError` built
    /// from the first two bytes.
    Malformed {
        /// Why it did not decode.
        error: DecodeError,
        /// The frame's length.
        len: usize,
        /// Up to its first 8 bytes.
        prefix: Bytes,
    },
}

impl FrameError {
    /// True if the connection cannot go on after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::FrameTooLarge { .. })
    }

    /// The two bytes the original puts in its `ParsingError` reply (0 where missing).
    pub fn parsing_error_bytes(&self) -> (u8, u8) {
        match self {
            FrameError::Malformed { prefix, .. } => (
                prefix.first().copied().unwrap_or(0),
                prefix.get(1).copied().unwrap_or(0),
            ),
            FrameError::FrameTooLarge { .. } => (0, 0),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            FrameError::Malformed { error, len, .. } => {
                write!(f, "malformed frame of {len} bytes: {error}")
            }
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Malformed { error, .. } => Some(error),
            FrameError::FrameTooLarge { .. } => None,
        }
    }
}

/// Where the decoder is within the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for the 4-byte length prefix.
    Header,
    /// The prefix has been read; waiting for `len` message bytes.
    Payload { len: usize },
}

/// Splits a byte stream into frames and decodes them.
///
/// Feed it bytes with [`extend`](FrameDecoder::extend) in any chunking, then call
/// [`decode`](FrameDecoder::decode) until it returns `Ok(None)` ("not enough bytes yet").
#[derive(Debug)]
pub struct FrameDecoder {
    /// Length prefixes and small frames; never shared, so its memory is reused.
    buf: BytesMut,
    /// How much of `buf` is decoded: frames are read in place and `buf` is advanced past them
    /// once per [`extend`](FrameDecoder::extend), not once per frame.
    pos: usize,
    /// The frame being collected, if it is at least [`COPY_FRAMES_BELOW`] long: allocated at
    /// its exact length once the prefix is known, filled before `buf`.
    frame: BytesMut,
    state: DecodeState,
    max_frame_size: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames over `max_frame_size` message bytes.
    pub fn new(max_frame_size: usize) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            pos: 0,
            frame: BytesMut::new(),
            state: DecodeState::Header,
            max_frame_size,
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, mut data: &[u8]) {
        if let DecodeState::Payload { len } = self.state
            && len >= COPY_FRAMES_BELOW
        {
            let take = (len - self.frame.len()).min(data.len());
            self.frame.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if self.pos == self.buf.len() {
            // Everything decoded: start over at the front, keeping the allocation.
            self.buf.clear();
        } else {
            self.buf.advance(self.pos);
        }
        self.pos = 0;
        self.buf.extend_from_slice(data);
    }

    /// The bytes not yet decoded in `buf`.
    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// True when no partial frame is buffered (an EOF here is a clean close).
    pub fn is_idle(&self) -> bool {
        self.state == DecodeState::Header && self.unread().is_empty()
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.unread().len() + self.frame.len()
    }

    /// The next complete frame's message, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`FrameError::FrameTooLarge`] (fatal: call no more) or [`FrameError::Malformed`] (the
    /// frame was skipped; keep calling).
    pub fn decode(&mut self) -> Result<Option<MultiplexMessage>, FrameError> {
        let len = match self.state {
            DecodeState::Header => {
                let Some(prefix) = self.unread().first_chunk::<LENGTH_PREFIX>() else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes(*prefix) as usize;
                self.pos += LENGTH_PREFIX;
                if len > self.max_frame_size {
                    return Err(FrameError::FrameTooLarge {
                        len,
                        max: self.max_frame_size,
                    });
                }
                // Allocate only now that the length is known to be within the limit.
                if len >= COPY_FRAMES_BELOW {
                    let take = len.min(self.unread().len());
                    self.frame = BytesMut::with_capacity(len);
                    self.frame
                        .extend_from_slice(&self.buf[self.pos..self.pos + take]);
                    self.pos += take;
                }
                self.state = DecodeState::Payload { len };
                len
            }
            DecodeState::Payload { len } => len,
        };
        let decoded = if len < COPY_FRAMES_BELOW {
            let Some(body) = self.unread().get(..len) else {
                return Ok(None);
            };
            let decoded = MultiplexMessage::decode_copied(body);
            let prefix = decoded
                .is_err()
                .then(|| Bytes::copy_from_slice(&body[..len.min(KEPT_PREFIX)]));
            self.pos += len;
            decoded.map_err(|e| (e, prefix.unwrap_or_default()))
        } else {
            if self.frame.len() < len {
                return Ok(None);
            }
            let frame = std::mem::take(&mut self.frame).freeze();
            MultiplexMessage::decode(&frame).map_err(|e| (e, frame.slice(..len.min(KEPT_PREFIX))))
        };
        self.state = DecodeState::Header;
        decoded
            .map(Some)
            .map_err(|(error, prefix)| FrameError::Malformed { error, len, prefix })
    }
}

/// The encoded message is larger than `max_frame_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The message's encoded length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame of {} bytes exceeds the limit of {}",
            self.len, self.max
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// Appends one frame (length prefix and message) to `out`.
///
/// # Errors
///
/// [`FrameTooLarge`] if the message's encoding exceeds `max_frame_size`; nothing is written.
pub fn encode_frame(
    msg: &MultiplexMessage,
    max_frame_size: usize,
    out: &mut BytesMut,
) -> Result<(), FrameTooLarge> {
    let len = msg.encoded_len();
    if len > max_frame_size {
        return Err(FrameTooLarge {
            len,
            max: max_frame_size,
        });
    }
    out.reserve(LENGTH_PREFIX + len);
    // `max_frame_size` is validated to fit in a u32 (see `PeerConfig::validate`).
    out.put_u32(len as u32);
    msg.encode(out);
    Ok(())
}

/// Payloads at least this long are not copied into the frame buffer but handed on as their own
/// chunk, so a large message (or one shared by a broadcast) reaches the kernel without a copy.
pub const INLINE_PAYLOAD_MAX: usize = 1024;

/// Appends one frame to `out` like [`encode_frame`], except that a payload of
/// [`INLINE_PAYLOAD_MAX`] bytes or more is left out and returned: the frame is `out`'s new bytes
/// followed by that payload.
///
/// # Errors
///
/// [`FrameTooLarge`] if the message's encoding exceeds `max_frame_size`; nothing is written.
pub fn encode_frame_split(
    msg: &MultiplexMessage,
    max_frame_size: usize,
    out: &mut BytesMut,
) -> Result<Option<Bytes>, FrameTooLarge> {
    let payload = msg.payload();
    if payload.len() < INLINE_PAYLOAD_MAX {
        return encode_frame(msg, max_frame_size, out).map(|()| None);
    }
    let len = msg.encoded_len();
    if len > max_frame_size {
        return Err(FrameTooLarge {
            len,
            max: max_frame_size,
        });
    }
    out.reserve(LENGTH_PREFIX + len - payload.len());
    out.put_u32(len as u32);
    msg.encode_head(out);
    Ok(Some(payload.clone()))
}

/// Appends the length prefix and every byte but the payload's of a
/// `Message(DirectSendMsg { protocol, priority: 0, raw_msg })` frame whose payload is
/// `payload_len` bytes long: what [`encode_frame`] writes for it, less the payload, which the
/// caller appends (or hands on as a chunk of its own). The hot path of a direct send, without
/// building the message.
///
/// # Errors
///
/// [`FrameTooLarge`] if the frame would exceed `max_frame_size`; nothing is written.
pub fn encode_direct_send_head(
    protocol: ProtocolId,
    payload_len: usize,
    max_frame_size: usize,
    out: &mut BytesMut,
) -> Result<(), FrameTooLarge> {
    // Variant, variant, protocol, priority, payload length, payload.
    let len = 2 + uleb_len(u32::from(protocol.0)) + 1 + uleb_len(payload_len as u32) + payload_len;
    if len > max_frame_size || payload_len > u32::MAX as usize {
        return Err(FrameTooLarge {
            len,
            max: max_frame_size,
        });
    }
    out.reserve(LENGTH_PREFIX + len - payload_len);
    // `max_frame_size` is validated to fit in a u32 (see `PeerConfig::validate`).
    out.put_u32(len as u32);
    out.put_slice(&[0, 3]);
    put_uleb(out, u32::from(protocol.0));
    out.put_u8(0);
    put_uleb(out, payload_len as u32);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::message::{DirectSendMsg, NetworkMessage, ProtocolId};

    const HELLO_FRAME: [u8; 20] = [
        0x00, 0x00, 0x00, 0x10, 0x00, 0x03, 0x02, 0x00, 0x0b, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20,
        0x77, 0x6f, 0x72, 0x6c, 0x64,
    ];

    fn hello() -> MultiplexMessage {
        MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
            protocol_id: ProtocolId(2),
            priority: 0,
            raw_msg: Bytes::from_static(b"hello world"),
        }))
    }

    #[test]
    fn whole_frame_vector_both_directions() {
        let mut out = BytesMut::new();
        encode_frame(&hello(), 128, &mut out).unwrap();
        assert_eq!(&out[..], HELLO_FRAME);
        let mut d = FrameDecoder::new(128);
        d.extend(&HELLO_FRAME);
        assert_eq!(d.decode(), Ok(Some(hello())));
        assert_eq!(d.decode(), Ok(None));
        assert!(d.is_idle());
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut d = FrameDecoder::new(128);
        for (i, b) in HELLO_FRAME.iter().enumerate() {
            assert_eq!(d.decode(), Ok(None), "early frame before byte {i}");
            d.extend(&[*b]);
        }
        assert_eq!(d.decode(), Ok(Some(hello())));
    }

    #[test]
    fn split_encoding_equals_whole_encoding() {
        for len in [0, 10, INLINE_PAYLOAD_MAX - 1, INLINE_PAYLOAD_MAX, 5000] {
            let msg = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(200),
                priority: 0,
                raw_msg: vec![7; len].into(),
            }));
            let mut whole = BytesMut::new();
            encode_frame(&msg, 1 << 20, &mut whole).unwrap();
            let mut head = BytesMut::new();
            let rest = encode_frame_split(&msg, 1 << 20, &mut head).unwrap();
            assert_eq!(rest.is_some(), len >= INLINE_PAYLOAD_MAX);
            head.extend_from_slice(&rest.unwrap_or_default());
            assert_eq!(head, whole, "len {len}");
        }
    }

    #[test]
    fn direct_send_head_and_payload_equal_the_whole_encoding() {
        for (protocol, len) in [(2, 0), (2, 11), (200, 127), (127, 128), (255, 20_000)] {
            let msg = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(protocol),
                priority: 0,
                raw_msg: vec![9; len].into(),
            }));
            let mut whole = BytesMut::new();
            encode_frame(&msg, 1 << 20, &mut whole).unwrap();
            let mut head = BytesMut::new();
            encode_direct_send_head(ProtocolId(protocol), len, 1 << 20, &mut head).unwrap();
            head.extend_from_slice(&vec![9; len]);
            assert_eq!(head, whole, "protocol {protocol}, len {len}");
        }
        let mut head = BytesMut::new();
        assert_eq!(
            encode_direct_send_head(ProtocolId(2), 11, 15, &mut head),
            Err(FrameTooLarge { len: 16, max: 15 })
        );
        assert!(head.is_empty());
    }

    #[test]
    fn encoder_refuses_oversized() {
        let mut out = BytesMut::new();
        assert_eq!(
            encode_frame(&hello(), 15, &mut out),
            Err(FrameTooLarge { len: 16, max: 15 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_prefix_is_fatal_and_allocates_nothing() {
        let mut d = FrameDecoder::new(1024);
        d.extend(&[0xff, 0xff, 0xff, 0xff]);
        let err = d.decode().unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(
            err,
            FrameError::FrameTooLarge {
                len: u32::MAX as usize,
                max: 1024
            }
        );
        assert!(d.buf.capacity() < 1024);
    }

    #[test]
    fn malformed_frame_is_skipped() {
        let mut d = FrameDecoder::new(128);
        d.extend(&[0, 0, 0, 3, 0x00, 0x07, 0x01]);
        d.extend(&HELLO_FRAME);
        let err = d.decode().unwrap_err();
        assert!(!err.is_fatal());
        assert_eq!(err.parsing_error_bytes(), (0x00, 0x07));
        assert_eq!(d.decode(), Ok(Some(hello())));
    }

    #[test]
    fn empty_frame_is_malformed_with_zero_bytes() {
        let mut d = FrameDecoder::new(128);
        d.extend(&[0, 0, 0, 0]);
        let err = d.decode().unwrap_err();
        assert_eq!(err.parsing_error_bytes(), (0, 0));
        assert!(d.is_idle());
    }

    #[test]
    fn partial_frame_is_not_idle() {
        let mut d = FrameDecoder::new(128);
        d.extend(&HELLO_FRAME[..6]);
        assert_eq!(d.decode(), Ok(None));
        assert!(!d.is_idle());
    }
}
