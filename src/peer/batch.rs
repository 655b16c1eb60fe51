//! What travels on the frames channel from the mux to the writer: [`ToWriter`], either a
//! [`Batch`] of encoded frames or the `DrainAndClose` marker.
//!
//! A batch is frames ready for one vectored write: small frames packed into shared chunks,
//! large payloads as chunks of their own (shared with the sender's buffer, not copied). Each
//! message, response or error reply in it has a mark at the offset where its last byte ends;
//! the writer advances through the marks as the kernel takes bytes, so every mark is settled
//! exactly once: written, or abandoned if the batch is given up.

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};

use super::receipt::{Delivery, ReceiptTx};
use crate::proto::codec::{INLINE_PAYLOAD_MAX, encode_direct_send_head, encode_frame_split};
use crate::proto::{FrameTooLarge, ProtocolId, Transmit};

/// One item on the frames channel.
#[derive(Debug)]
pub(crate) enum ToWriter {
    Batch(Batch),
    /// Sent by the closer after the mux has ended: every frame is ahead of it. The writer
    /// writes them, half-closes the socket and exits.
    DrainAndClose,
}

/// What an outgoing frame completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A direct send or an RPC request: counted as a message.
    Message,
    /// An RPC response: counted as a message; holds an inbound RPC slot until settled.
    Response,
    /// A `ParsingError` reply to a malformed frame: not a message, but bounded while unsent.
    ErrorReply,
}

/// The session's tag for an outgoing frame: its kind and, for a send with a receipt, the
/// receipt.
#[derive(Debug)]
pub(crate) struct Tag {
    pub(crate) kind: Kind,
    pub(crate) receipt: Option<ReceiptTx>,
}

impl Tag {
    pub(crate) fn message(receipt: Option<ReceiptTx>) -> Tag {
        Tag {
            kind: Kind::Message,
            receipt,
        }
    }

    pub(crate) fn of(kind: Kind) -> Tag {
        Tag {
            kind,
            receipt: None,
        }
    }
}

/// Totals of what was settled (written, or abandoned), to add to the shared counters once per
/// batch rather than once per message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) responses: usize,
    pub(crate) error_replies: usize,
}

impl Settled {
    /// Counts one completion of `kind` carrying `len` payload bytes.
    pub(crate) fn add(&mut self, kind: Kind, len: usize) {
        match kind {
            Kind::Message => {}
            Kind::Response => self.responses += 1,
            Kind::ErrorReply => {
                self.error_replies += 1;
                return;
            }
        }
        self.messages += 1;
        self.bytes += len as u64;
    }
}

/// The completion whose last byte ends at `end` within its batch.
#[derive(Debug)]
struct Mark {
    end: usize,
    len: usize,
    tag: Tag,
}

#[derive(Debug, Default)]
pub(crate) struct Batch {
    chunks: Vec<Bytes>,
    marks: Vec<Mark>,
    len: usize,
    /// Bytes already written.
    written: usize,
    /// Marks already settled as written.
    next_mark: usize,
}

impl Batch {
    /// Appends one frame. `head` is the mux's scratch buffer for small frames, split off into
    /// chunks.
    pub(crate) fn push(
        &mut self,
        t: Transmit<Tag>,
        max_frame_size: usize,
        head: &mut BytesMut,
    ) -> Result<(), FrameTooLarge> {
        let before = head.len();
        if let Some(payload) = encode_frame_split(&t.message, max_frame_size, head)? {
            self.len += head.len() - before + payload.len();
            self.chunks.push(head.split().freeze());
            self.chunks.push(payload);
        } else {
            self.len += head.len() - before;
        }
        if let Some(c) = t.completes {
            self.marks.push(Mark {
                end: self.len,
                len: c.len,
                tag: c.tag,
            });
        }
        Ok(())
    }

    /// Appends one direct send that fits a frame: the same bytes as [`push`](Batch::push)
    /// writes for it, without building the message first.
    pub(crate) fn push_direct_send(
        &mut self,
        protocol: ProtocolId,
        data: Bytes,
        tag: Tag,
        max_frame_size: usize,
        head: &mut BytesMut,
    ) -> Result<(), FrameTooLarge> {
        let before = head.len();
        encode_direct_send_head(protocol, data.len(), max_frame_size, head)?;
        let len = data.len();
        if len < INLINE_PAYLOAD_MAX {
            head.extend_from_slice(&data);
            self.len += head.len() - before;
        } else {
            self.len += head.len() - before + len;
            self.chunks.push(head.split().freeze());
            self.chunks.push(data);
        }
        self.marks.push(Mark {
            end: self.len,
            len,
            tag,
        });
        Ok(())
    }

    /// Moves the bytes still in `head` into the batch; call before handing it over.
    pub(crate) fn seal(&mut self, head: &mut BytesMut) {
        if !head.is_empty() {
            self.chunks.push(head.split().freeze());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.marks.is_empty()
    }

    /// Encoded bytes in the batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_written(&self) -> bool {
        self.written == self.len
    }

    /// Appends slices of the bytes not yet written, up to `max` slices in `out`.
    pub(crate) fn unwritten<'a>(&'a self, out: &mut Vec<IoSlice<'a>>, max: usize) {
        let mut skip = self.written;
        for chunk in &self.chunks {
            if out.len() == max {
                return;
            }
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            out.push(IoSlice::new(&chunk[skip..]));
            skip = 0;
        }
    }

    /// Records up to `n` more bytes as written and settles the completions they finish,
    /// resolving their receipts. Returns the bytes taken from `n`.
    pub(crate) fn advance(&mut self, n: usize, written: &mut Settled) -> usize {
        let step = n.min(self.len - self.written);
        self.written += step;
        while let Some(mark) = self.marks.get_mut(self.next_mark) {
            if mark.end > self.written {
                break;
            }
            written.add(mark.tag.kind, mark.len);
            if let Some(r) = mark.tag.receipt.take() {
                r.resolve(Delivery::Written);
            }
            self.next_mark += 1;
        }
        step
    }

    /// Settles every completion not yet written as abandoned (receipts resolve as such when
    /// dropped here).
    pub(crate) fn abandon(mut self, abandoned: &mut Settled) {
        for mark in self.marks.drain(self.next_mark..) {
            abandoned.add(mark.tag.kind, mark.len);
        }
    }
}

/// The bytes of `batches` not yet written, in order, as at most `max` slices.
pub(crate) fn unwritten(batches: &[Batch], max: usize) -> Vec<IoSlice<'_>> {
    let mut slices = Vec::with_capacity(max);
    for b in batches {
        b.unwritten(&mut slices, max);
        if slices.len() == max {
            break;
        }
    }
    slices
}

/// Records `n` more bytes of `batches`, in order, as written; returns what they settled.
pub(crate) fn advance(batches: &mut [Batch], mut n: usize) -> Settled {
    let mut done = Settled::default();
    for b in batches {
        if n == 0 {
            break;
        }
        n -= b.advance(n, &mut done);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Completion, DirectSendMsg, MultiplexMessage, NetworkMessage};

    fn transmit(len: usize, tag: Tag) -> Transmit<Tag> {
        Transmit {
            message: MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
                protocol_id: ProtocolId(2),
                priority: 0,
                raw_msg: vec![1; len].into(),
            })),
            completes: Some(Completion { len, tag }),
        }
    }

    #[test]
    fn a_direct_send_pushed_directly_is_the_same_bytes() {
        for len in [0, 10, INLINE_PAYLOAD_MAX - 1, INLINE_PAYLOAD_MAX, 5000] {
            let (mut h1, mut h2) = (BytesMut::new(), BytesMut::new());
            let (mut general, mut direct) = (Batch::default(), Batch::default());
            general
                .push(transmit(len, Tag::message(None)), 1 << 20, &mut h1)
                .unwrap();
            general.seal(&mut h1);
            direct
                .push_direct_send(
                    ProtocolId(2),
                    vec![1; len].into(),
                    Tag::message(None),
                    1 << 20,
                    &mut h2,
                )
                .unwrap();
            direct.seal(&mut h2);
            let bytes = |b: &Batch| {
                b.chunks
                    .iter()
                    .flat_map(|c| c.to_vec())
                    .collect::<Vec<u8>>()
            };
            assert_eq!(bytes(&general), bytes(&direct), "len {len}");
            assert_eq!(general.len(), direct.len());
            assert_eq!(general.marks[0].end, direct.marks[0].end);
        }
    }

    /// Two small frames and one with a large payload (a chunk of its own); written in pieces
    /// that cut frames anywhere, each completion settles once, when its last byte is taken.
    #[test]
    fn marks_settle_when_their_last_byte_is_written() {
        let mut head = BytesMut::new();
        let mut b = Batch::default();
        let (receipt, outcome) = ReceiptTx::new();
        b.push(
            transmit(10, Tag::message(Some(receipt))),
            1 << 20,
            &mut head,
        )
        .unwrap();
        b.push(transmit(20, Tag::of(Kind::Response)), 1 << 20, &mut head)
            .unwrap();
        b.push(transmit(5000, Tag::message(None)), 1 << 20, &mut head)
            .unwrap();
        b.seal(&mut head);
        // Prefix, then variant, variant, protocol, priority, length, payload.
        let first = 4 + 5 + 10;
        let mut written = Settled::default();
        assert_eq!(b.advance(first - 1, &mut written), first - 1);
        assert_eq!(written, Settled::default());
        assert_eq!(outcome.try_get(), None);
        b.advance(1, &mut written);
        assert_eq!(outcome.try_get(), Some(Delivery::Written));
        assert_eq!((written.messages, written.bytes), (1, 10));
        b.advance(30, &mut written);
        assert_eq!(written.responses, 1);
        let mut slices = Vec::new();
        b.unwritten(&mut slices, 64);
        let rest: usize = slices.iter().map(|s| s.len()).sum();
        assert_eq!(rest, b.len() - b.written);
        drop(slices);
        let mut abandoned = Settled::default();
        b.abandon(&mut abandoned);
        assert_eq!((abandoned.messages, abandoned.bytes), (1, 5000));
    }
}
