//! What stands between the frames and the socket: nothing (plaintext), or a Noise session,
//! each direction owned by its thread. [`Security`] is what the builder holds; it splits into
//! the writer's [`Sealing`] and the reader's [`Opening`].
//!
//! Writing over Noise ([`write_sealed`]): the writer seals the plaintext of its batches
//! (their frames, in order) into Noise messages (`noise::Outgoing`) and writes the ciphertext.
//! A batch advances, and the marks in it settle, only by the plaintext of messages whose
//! ciphertext the kernel took whole: a message counts as written only once the last byte of
//! the Noise message holding its last byte is written. New plaintext is sealed only when all
//! earlier ciphertext is written, so the batches' unwritten bytes are exactly the plaintext
//! not yet sealed. When the writer gives up, a Noise message may be cut; the writer writes
//! nothing more, ever, so nothing follows the cut (see `writer.rs`).
//!
//! Reading over Noise ([`Opening::feed`]): the ciphertext read is opened into a scratch buffer
//! and the plaintext handed to the frame decoder. A message that fails to open, a bad length
//! or the end of the stream inside a message is a [`ReadError`]; the reader closes the
//! connection with `InputOutputError`.

use std::io::{self, IoSlice};

use bytes::BytesMut;

use super::batch::{self, Batch};
use super::metrics::Counters;
use super::shared::Shared;
use super::socket::Half;
use crate::noise::{MAX_PLAINTEXT_LEN, NoiseReader, NoiseWriter, Outgoing, ReadError};
use crate::proto::FrameDecoder;

/// Plaintext sealed per round of writes: four full Noise messages. Enough that one system call
/// carries a large batch, few enough that the remote starts opening the first messages while
/// the next are sealed.
const SEAL_MAX: usize = 4 * MAX_PLAINTEXT_LEN;

/// Most slices of plaintext gathered for one seal.
const MAX_SLICES: usize = 64;

/// How a connection's bytes are protected.
#[derive(Debug, Default)]
pub(crate) enum Security {
    /// Frames go to the socket as they are.
    #[default]
    Plain,
    /// Frames travel inside an established Noise session (boxed: the expanded AES keys make
    /// the halves large).
    Noise(Box<(NoiseWriter, NoiseReader)>),
}

impl Security {
    /// The writer's half and the reader's half.
    pub(crate) fn split(self) -> (Sealing, Opening) {
        match self {
            Security::Plain => (Sealing::Plain, Opening::Plain),
            Security::Noise(halves) => {
                let (w, r) = *halves;
                (
                    Sealing::Noise(Box::new(Outgoing::new(w))),
                    Opening::Noise(Box::new(Incoming {
                        reader: r,
                        plain: BytesMut::new(),
                    })),
                )
            }
        }
    }
}

/// The writer's side of [`Security`].
#[derive(Debug)]
pub(crate) enum Sealing {
    Plain,
    Noise(Box<Outgoing>),
}

/// The reader's side of [`Security`].
#[derive(Debug)]
pub(crate) enum Opening {
    Plain,
    Noise(Box<Incoming>),
}

/// The receiving half of a Noise session and its scratch buffer.
#[derive(Debug)]
pub(crate) struct Incoming {
    reader: NoiseReader,
    /// Scratch for the plaintext of one read, reused.
    plain: BytesMut,
}

impl Opening {
    /// Hands the plaintext of `data`, just read, to `decoder`.
    ///
    /// # Errors
    ///
    /// A Noise [`ReadError`]; the plaintext of the messages before the bad one, which did
    /// authenticate, has been handed over.
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        decoder: &mut FrameDecoder,
    ) -> Result<(), ReadError> {
        match self {
            Opening::Plain => {
                decoder.extend(data);
                Ok(())
            }
            Opening::Noise(n) => {
                let opened = n.reader.decrypt(data, &mut n.plain);
                decoder.extend(&n.plain);
                n.plain.clear();
                opened.map(|_| ())
            }
        }
    }

    /// At the end of the stream: checks that it did not end inside a Noise message.
    ///
    /// # Errors
    ///
    /// [`ReadError::Truncated`], or the error already reported.
    pub(crate) fn finish(&mut self) -> Result<(), ReadError> {
        match self {
            Opening::Plain => Ok(()),
            Opening::Noise(n) => n.reader.finish(),
        }
    }
}

/// One round of the writer over Noise: seals the next plaintext if everything sealed before
/// is written, writes as much ciphertext as the socket takes, and settles the messages whose
/// Noise messages that completed. Returns the bytes written (ciphertext).
///
/// # Errors
///
/// The write's error, or `Other` wrapping a Noise [`WriteError`](crate::noise::WriteError)
/// (counted in `noise_errors`).
pub(crate) fn write_sealed(
    half: &Half,
    shared: &Shared,
    out: &mut Outgoing,
    batches: &mut [Batch],
) -> io::Result<usize> {
    if out.is_empty() {
        let slices = batch::unwritten(batches, MAX_SLICES);
        if let Err(e) = out.seal(slices.iter().map(|s| &**s), SEAL_MAX) {
            Counters::add(&shared.counters.noise_errors, 1);
            return Err(io::Error::other(e));
        }
    }
    let written = half.write_vectored(&[IoSlice::new(out.unwritten())])?;
    shared.count_write(written, batch::advance(batches, out.wrote(written)));
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::encrypted_len;
    use crate::proto::codec::encode_frame;
    use crate::proto::{DirectSendMsg, MultiplexMessage, NetworkMessage, ProtocolId};

    fn frame(data: &[u8]) -> Vec<u8> {
        let m = MultiplexMessage::Message(NetworkMessage::DirectSendMsg(DirectSendMsg {
            protocol_id: ProtocolId(2),
            priority: 0,
            raw_msg: bytes::Bytes::copy_from_slice(data),
        }));
        let mut out = BytesMut::new();
        encode_frame(&m, 1 << 20, &mut out).unwrap();
        out.to_vec()
    }

    /// The sending half's output and, keyed alike, the receiving half's input.
    fn halves() -> (Outgoing, Opening) {
        const KEY: [u8; 32] = [1; 32];
        let r = NoiseReader::new(&KEY, crate::PeerId::default(), Default::default());
        let halves = Box::new((NoiseWriter::new(&KEY), r));
        let (sealing, opening) = Security::Noise(halves).split();
        let Sealing::Noise(out) = sealing else {
            unreachable!("a Noise security splits into Noise halves")
        };
        (*out, opening)
    }

    #[test]
    fn frames_cross_in_any_chunking_and_a_bad_byte_stops_the_rest() {
        let (mut out, mut opening) = halves();
        let frames = [frame(b"one"), frame(&[5; 70_000]), frame(b"three")];
        let plain: Vec<u8> = frames.concat();
        let mut wire = Vec::new();
        let mut fed = 0;
        while fed < plain.len() {
            fed += out.seal([&plain[fed..]], SEAL_MAX).unwrap();
            wire.extend_from_slice(out.unwritten());
            out.wrote(out.unwritten().len());
        }
        assert_eq!(wire.len(), encrypted_len(plain.len()));
        let mut decoder = FrameDecoder::new(1 << 20);
        for chunk in wire.chunks(977) {
            opening.feed(chunk, &mut decoder).unwrap();
        }
        let mut got = 0;
        while decoder.decode().unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, 3);
        assert_eq!(opening.finish(), Ok(()));

        // A flipped bit in the second message: the first message's frame still arrives.
        let (mut out, mut opening) = halves();
        out.seal([&frames[0][..]], SEAL_MAX).unwrap();
        out.seal([&frames[2][..]], SEAL_MAX).unwrap();
        let mut wire = out.unwritten().to_vec();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut decoder = FrameDecoder::new(1 << 20);
        assert_eq!(
            opening.feed(&wire, &mut decoder),
            Err(ReadError::Decrypt { message: 1 })
        );
        assert!(decoder.decode().unwrap().is_some());
        assert!(decoder.decode().unwrap().is_none());
    }

    #[test]
    fn the_end_inside_a_message_is_a_truncation() {
        let (mut out, mut opening) = halves();
        out.seal([&frame(b"cut")[..]], SEAL_MAX).unwrap();
        let wire = out.unwritten().to_vec();
        let mut decoder = FrameDecoder::new(1 << 20);
        opening.feed(&wire[..wire.len() - 1], &mut decoder).unwrap();
        assert!(decoder.is_idle(), "nothing opened from a partial message");
        assert!(matches!(opening.finish(), Err(ReadError::Truncated { .. })));
        assert!(matches!(Opening::Plain.finish(), Ok(())));
    }
}
