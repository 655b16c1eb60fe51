//! The messages of Aptos messaging v1 and their BCS layout, byte by byte.
//!
//! This file owns the message types and their strict encoding and decoding. It knows nothing
//! of frames (see `codec.rs` for the length prefix) nor of fragmentation (see `stream.rs`).
//!
//! # Wire layout (BCS)
//!
//! Enum variants are written as their declaration position in ULEB128, integers little-endian,
//! byte strings as a ULEB128 length followed by the bytes. Decoding is strict: a ULEB128 must be
//! canonical (no redundant `0x80` continuation groups), an unknown variant is an error, and every
//! byte of the input must be consumed.
//!
//! | Message | Bytes |
//! |---|---|
//! | `MultiplexMessage::Message(m)` | `00` ‖ NetworkMessage |
//! | `MultiplexMessage::Stream(s)` | `01` ‖ StreamMessage |
//! | `NetworkMessage::Error(e)` | `00` ‖ ErrorCode |
//! | `NetworkMessage::RpcRequest` | `01` ‖ protocol_id (ULEB) ‖ request_id (u32 LE) ‖ priority (u8) ‖ len ‖ bytes |
//! | `NetworkMessage::RpcResponse` | `02` ‖ request_id (u32 LE) ‖ priority (u8) ‖ len ‖ bytes |
//! | `NetworkMessage::DirectSendMsg` | `03` ‖ protocol_id (ULEB) ‖ priority (u8) ‖ len ‖ bytes |
//! | `ErrorCode::ParsingError{message, protocol}` | `00` ‖ u8 ‖ u8 |
//! | `ErrorCode::NotSupported(kind, protocol)` | `01` ‖ (`00` RpcRequest, `01` DirectSendMsg) ‖ protocol_id |
//! | `StreamMessage::Header{request_id, num_fragments, message}` | `00` ‖ u32 LE ‖ u8 ‖ NetworkMessage |
//! | `StreamMessage::Fragment{request_id, fragment_id, raw_data}` | `01` ‖ u32 LE ‖ u8 ‖ len ‖ bytes |
//!
//! `ProtocolId` is an enum in the original, so its byte is a variant index written as ULEB128;
//! here it is an open `u8` so applications can name their own protocols. Values up to 127 take
//! one byte, exactly as the original's 29 protocols do; a decoded index above 255 is an error.

use std::fmt;

use bytes::{BufMut, Bytes};

/// Identifies an application protocol carried over the connection (`ConsensusRpcBcs` is 0,
/// `MempoolDirectSend` is 2, and so on in the original's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtocolId(pub u8);

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol {}", self.0)
    }
}

/// The id of an RPC request, chosen by the requester (per connection, from 0, wrapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

/// The id of a streamed (fragmented) message, from its own per-connection counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

/// The original's message priority byte; always sent as 0 and ignored on receipt.
pub type Priority = u8;

/// The top-level message of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MultiplexMessage {
    /// A whole message.
    Message(NetworkMessage),
    /// A piece of a message too large for one frame.
    Stream(StreamMessage),
}

/// A message as the application protocols see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMessage {
    /// The remote could not handle something we sent.
    Error(ErrorCode),
    /// A request that expects one response.
    RpcRequest(RpcRequest),
    /// The response to an earlier request.
    RpcResponse(RpcResponse),
    /// A one-way message.
    DirectSendMsg(DirectSendMsg),
}

/// An RPC request (field order is the wire order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcRequest {
    /// Which protocol handles the request.
    pub protocol_id: ProtocolId,
    /// Echoed in the response.
    pub request_id: RequestId,
    /// Always 0.
    pub priority: Priority,
    /// The request body.
    pub raw_request: Bytes,
}

/// An RPC response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcResponse {
    /// The id of the request this answers.
    pub request_id: RequestId,
    /// Copied from the request.
    pub priority: Priority,
    /// The response body.
    pub raw_response: Bytes,
}

/// A one-way message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectSendMsg {
    /// Which protocol handles the message.
    pub protocol_id: ProtocolId,
    /// Always 0.
    pub priority: Priority,
    /// The message body.
    pub raw_msg: Bytes,
}

/// What went wrong, as reported to the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A frame could not be decoded. The two bytes are the first two bytes of the frame (the
    /// field names are the original's legacy names).
    ParsingError {
        /// First byte of the undecodable frame, or 0.
        message: u8,
        /// Second byte of the undecodable frame, or 0.
        protocol: u8,
    },
    /// The protocol is not supported for that kind of message. Defined on the wire; the
    /// original never sends it, and neither does syncpeer.
    NotSupported(NotSupportedKind, ProtocolId),
}

/// The kind of message named by [`ErrorCode::NotSupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSupportedKind {
    /// An RPC request.
    RpcRequest,
    /// A direct send.
    DirectSendMsg,
}

/// A piece of a streamed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamMessage {
    /// Opens a stream: the message with the first part of its payload.
    Header(StreamHeader),
    /// The next part of the payload.
    Fragment(StreamFragment),
}

/// Opens a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The stream's id (the original calls it `request_id`).
    pub request_id: StreamId,
    /// How many fragments follow the header.
    pub num_fragments: u8,
    /// The message, carrying the first part of the payload.
    pub message: NetworkMessage,
}

/// One fragment of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFragment {
    /// The stream's id.
    pub request_id: StreamId,
    /// Numbered from 1.
    pub fragment_id: u8,
    /// This fragment's part of the payload.
    pub raw_data: Bytes,
}

impl NetworkMessage {
    /// The payload length (0 for `Error`).
    pub fn data_len(&self) -> usize {
        match self {
            NetworkMessage::Error(_) => 0,
            NetworkMessage::RpcRequest(r) => r.raw_request.len(),
            NetworkMessage::RpcResponse(r) => r.raw_response.len(),
            NetworkMessage::DirectSendMsg(m) => m.raw_msg.len(),
        }
    }

    /// The payload (empty for `Error`).
    pub fn data(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::new();
        match self {
            NetworkMessage::Error(_) => &EMPTY,
            NetworkMessage::RpcRequest(r) => &r.raw_request,
            NetworkMessage::RpcResponse(r) => &r.raw_response,
            NetworkMessage::DirectSendMsg(m) => &m.raw_msg,
        }
    }

    /// Replaces the payload, returning the old one (an `Error` has none and is unchanged).
    pub(crate) fn replace_data(&mut self, data: Bytes) -> Bytes {
        match self {
            NetworkMessage::Error(_) => Bytes::new(),
            NetworkMessage::RpcRequest(r) => std::mem::replace(&mut r.raw_request, data),
            NetworkMessage::RpcResponse(r) => std::mem::replace(&mut r.raw_response, data),
            NetworkMessage::DirectSendMsg(m) => std::mem::replace(&mut m.raw_msg, data),
        }
    }
}

/// Why bytes did not decode as a message. Each variant names the condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// A ULEB128 used more bytes than needed, or overflowed 32 bits.
    NonCanonicalUleb,
    /// An enum variant index this version does not know.
    UnknownVariant {
        /// Which enum.
        kind: &'static str,
        /// The index read.
        index: u32,
    },
    /// A protocol id above 255.
    ProtocolOutOfRange(u32),
    /// Bytes were left after the message.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("message truncated"),
            DecodeError::NonCanonicalUleb => f.write_str("non-canonical uleb128"),
            DecodeError::UnknownVariant { kind, index } => {
                write!(f, "unknown {kind} variant {index}")
            }
            DecodeError::ProtocolOutOfRange(v) => write!(f, "protocol id {v} out of range"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} trailing bytes after message"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Number of bytes the ULEB128 form of `v` takes.
pub(crate) fn uleb_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_uleb(out: &mut impl BufMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Writes a byte string's length and, if `with_data`, its bytes (payloads are always the last
/// field, so leaving them out yields the head of a frame for a vectored write).
fn put_bytes(out: &mut impl BufMut, b: &[u8], with_data: bool) {
    // Lengths are bounded by max_frame_size (validated to fit in u32) before encoding.
    put_uleb(out, b.len() as u32);
    if with_data {
        out.put_slice(b);
    }
}

impl MultiplexMessage {
    /// Exact number of bytes [`MultiplexMessage::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            MultiplexMessage::Message(m) => m.encoded_len(),
            MultiplexMessage::Stream(StreamMessage::Header(h)) => {
                1 + 4 + 1 + h.message.encoded_len()
            }
            MultiplexMessage::Stream(StreamMessage::Fragment(f)) => {
                1 + 4 + 1 + bytes_len(&f.raw_data)
            }
        }
    }

    /// Appends the BCS bytes of this message.
    pub fn encode(&self, out: &mut impl BufMut) {
        self.encode_with(out, true);
    }

    /// Appends every byte but the payload's (which is always last): write
    /// [`payload`](MultiplexMessage::payload) after it to complete the message.
    pub fn encode_head(&self, out: &mut impl BufMut) {
        self.encode_with(out, false);
    }

    /// The payload bytes, which are the message's last bytes on the wire.
    pub fn payload(&self) -> &Bytes {
        match self {
            MultiplexMessage::Message(m) => m.data(),
            MultiplexMessage::Stream(StreamMessage::Header(h)) => h.message.data(),
            MultiplexMessage::Stream(StreamMessage::Fragment(f)) => &f.raw_data,
        }
    }

    fn encode_with(&self, out: &mut impl BufMut, with_data: bool) {
        match self {
            MultiplexMessage::Message(m) => {
                out.put_u8(0);
                m.encode_with(out, with_data);
            }
            MultiplexMessage::Stream(StreamMessage::Header(h)) => {
                out.put_slice(&[1, 0]);
                out.put_u32_le(h.request_id.0);
                out.put_u8(h.num_fragments);
                h.message.encode_with(out, with_data);
            }
            MultiplexMessage::Stream(StreamMessage::Fragment(f)) => {
                out.put_slice(&[1, 1]);
                out.put_u32_le(f.request_id.0);
                out.put_u8(f.fragment_id);
                put_bytes(out, &f.raw_data, with_data);
            }
        }
    }

    /// Decodes one message that must fill `buf` exactly. Byte strings in the result share
    /// `buf`'s memory (no copy).
    ///
    /// # Errors
    ///
    /// Any departure from the strict layout above.
    pub fn decode(buf: &Bytes) -> Result<MultiplexMessage, DecodeError> {
        MultiplexMessage::read(Reader::shared(buf))
    }

    /// Decodes one message that must fill `buf` exactly, copying each byte string into a
    /// buffer of its own. For small frames this is cheaper than sharing: a shared buffer's
    /// reference count would be bumped by the decoding thread and dropped by the application's,
    /// one contended cache line per message.
    ///
    /// # Errors
    ///
    /// Any departure from the strict layout above.
    pub fn decode_copied(buf: &[u8]) -> Result<MultiplexMessage, DecodeError> {
        if let Some(m) = MultiplexMessage::direct_send_fast(buf) {
            return Ok(m);
        }
        MultiplexMessage::read(Reader {
            buf,
            owner: None,
            pos: 0,
        })
    }

    /// The most common frame, a direct send with a protocol id under 128 and a payload under
    /// 16 KiB (one- or two-byte length), decoded in a few comparisons. `None` for anything
    /// else, including every input the strict path refuses: the caller then takes that path,
    /// which decides (the two agree on every input they both take; see the tests).
    fn direct_send_fast(buf: &[u8]) -> Option<MultiplexMessage> {
        let [0, 3, protocol, priority, rest @ ..] = buf else {
            return None;
        };
        if *protocol >= 0x80 {
            return None;
        }
        let (len, payload) = match rest {
            [l, payload @ ..] if *l < 0x80 => (usize::from(*l), payload),
            // Canonical: a second group of zero would be a redundant encoding.
            [l, h, payload @ ..] if *l >= 0x80 && (1..0x80).contains(h) => {
                (usize::from(l & 0x7f) | usize::from(*h) << 7, payload)
            }
            _ => return None,
        };
        (payload.len() == len).then(|| {
            MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(*protocol),
                priority: *priority,
                raw_msg: Bytes::copy_from_slice(payload),
            }))
        })
    }

    fn read(mut r: Reader<'_>) -> Result<MultiplexMessage, DecodeError> {
        let msg = match r.variant("MultiplexMessage", 2)? {
            0 => MultiplexMessage::Message(NetworkMessage::read(&mut r)?),
            _ => MultiplexMessage::Stream(match r.variant("StreamMessage", 2)? {
                0 => StreamMessage::Header(StreamHeader {
                    request_id: StreamId(r.u32()?),
                    num_fragments: r.u8()?,
                    message: NetworkMessage::read(&mut r)?,
                }),
                _ => StreamMessage::Fragment(StreamFragment {
                    request_id: StreamId(r.u32()?),
                    fragment_id: r.u8()?,
                    raw_data: r.bytes()?,
                }),
            }),
        };
        r.finish()?;
        Ok(msg)
    }
}

fn bytes_len(b: &Bytes) -> usize {
    uleb_len(b.len() as u32) + b.len()
}

impl NetworkMessage {
    /// Exact number of bytes [`NetworkMessage::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            NetworkMessage::Error(ErrorCode::ParsingError { .. }) => 3,
            NetworkMessage::Error(ErrorCode::NotSupported(_, p)) => 2 + uleb_len(p.0.into()),
            NetworkMessage::RpcRequest(r) => {
                uleb_len(r.protocol_id.0.into()) + 5 + bytes_len(&r.raw_request)
            }
            NetworkMessage::RpcResponse(r) => 5 + bytes_len(&r.raw_response),
            NetworkMessage::DirectSendMsg(m) => {
                uleb_len(m.protocol_id.0.into()) + 1 + bytes_len(&m.raw_msg)
            }
        }
    }

    /// Appends the BCS bytes of this message.
    pub fn encode(&self, out: &mut impl BufMut) {
        self.encode_with(out, true);
    }

    fn encode_with(&self, out: &mut impl BufMut, with_data: bool) {
        match self {
            NetworkMessage::Error(ErrorCode::ParsingError { message, protocol }) => {
                out.put_slice(&[0, 0, *message, *protocol]);
            }
            NetworkMessage::Error(ErrorCode::NotSupported(kind, p)) => {
                let kind = match kind {
                    NotSupportedKind::RpcRequest => 0,
                    NotSupportedKind::DirectSendMsg => 1,
                };
                out.put_slice(&[0, 1, kind]);
                put_uleb(out, p.0.into());
            }
            NetworkMessage::RpcRequest(r) => {
                out.put_u8(1);
                put_uleb(out, r.protocol_id.0.into());
                out.put_u32_le(r.request_id.0);
                out.put_u8(r.priority);
                put_bytes(out, &r.raw_request, with_data);
            }
            NetworkMessage::RpcResponse(r) => {
                out.put_u8(2);
                out.put_u32_le(r.request_id.0);
                out.put_u8(r.priority);
                put_bytes(out, &r.raw_response, with_data);
            }
            NetworkMessage::DirectSendMsg(m) => {
                out.put_u8(3);
                put_uleb(out, m.protocol_id.0.into());
                out.put_u8(m.priority);
                put_bytes(out, &m.raw_msg, with_data);
            }
        }
    }

    /// Decodes one `NetworkMessage` that must fill `buf` exactly.
    ///
    /// # Errors
    ///
    /// Any departure from the strict layout above.
    pub fn decode(buf: &Bytes) -> Result<NetworkMessage, DecodeError> {
        let mut r = Reader::shared(buf);
        let msg = NetworkMessage::read(&mut r)?;
        r.finish()?;
        Ok(msg)
    }

    fn read(r: &mut Reader<'_>) -> Result<NetworkMessage, DecodeError> {
        Ok(match r.variant("NetworkMessage", 4)? {
            0 => NetworkMessage::Error(match r.variant("ErrorCode", 2)? {
                0 => ErrorCode::ParsingError {
                    message: r.u8()?,
                    protocol: r.u8()?,
                },
                _ => {
                    let kind = match r.variant("NotSupportedType", 2)? {
                        0 => NotSupportedKind::RpcRequest,
                        _ => NotSupportedKind::DirectSendMsg,
                    };
                    ErrorCode::NotSupported(kind, r.protocol()?)
                }
            }),
            1 => NetworkMessage::RpcRequest(RpcRequest {
                protocol_id: r.protocol()?,
                request_id: RequestId(r.u32()?),
                priority: r.u8()?,
                raw_request: r.bytes()?,
            }),
            2 => NetworkMessage::RpcResponse(RpcResponse {
                request_id: RequestId(r.u32()?),
                priority: r.u8()?,
                raw_response: r.bytes()?,
            }),
            _ => NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: r.protocol()?,
                priority: r.u8()?,
                raw_msg: r.bytes()?,
            }),
        })
    }
}

/// A cursor over one message's bytes: every read checks the bytes are there first. Byte
/// strings are slices of `owner` when there is one, copies otherwise.
struct Reader<'a> {
    buf: &'a [u8],
    owner: Option<&'a Bytes>,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn shared(owner: &'a Bytes) -> Reader<'a> {
        Reader {
            buf: owner,
            owner: Some(owner),
            pos: 0,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A canonical ULEB128 that fits in 32 bits, as BCS requires.
    fn uleb(&mut self) -> Result<u32, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // A last group of zero after the first byte is a redundant encoding.
                if shift > 0 && byte == 0 {
                    return Err(DecodeError::NonCanonicalUleb);
                }
                return u32::try_from(value).map_err(|_| DecodeError::NonCanonicalUleb);
            }
        }
        Err(DecodeError::NonCanonicalUleb)
    }

    fn variant(&mut self, kind: &'static str, count: u32) -> Result<u32, DecodeError> {
        let index = self.uleb()?;
        if index < count {
            Ok(index)
        } else {
            Err(DecodeError::UnknownVariant { kind, index })
        }
    }

    fn protocol(&mut self) -> Result<ProtocolId, DecodeError> {
        let v = self.uleb()?;
        u8::try_from(v)
            .map(ProtocolId)
            .map_err(|_| DecodeError::ProtocolOutOfRange(v))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.uleb()? as usize;
        let start = self.pos;
        self.take(len)?;
        Ok(match self.owner {
            Some(owner) => owner.slice(start..start + len),
            None => Bytes::copy_from_slice(&self.buf[start..start + len]),
        })
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests;
