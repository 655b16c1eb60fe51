//! [`NoiseWriter`]: the sending half of a Noise session, owned by the writer thread. It turns
//! plaintext (a batch of encoded frames, in as many slices as it comes in) into transport
//! messages, each a 2-byte big-endian length and at most 65,535 bytes of ciphertext and tag.
//!
//! Like Aptos's `NoiseStream`, which fills a 65,519-byte buffer and encrypts it when full or
//! flushed, message boundaries follow the plaintext's size, not the frames': one call packs
//! everything it is given into as few messages as fit, so a batch of small frames costs one
//! tag and one prefix. Encryption happens in place in the caller's output buffer, which the
//! writer thread keeps and reuses: the plaintext is copied once, into that buffer, and
//! nothing else is allocated once the buffer has grown to the batch size.

use std::fmt;

use aes_gcm::{AeadInPlace, Aes256Gcm};
use bytes::BytesMut;

use super::error::WriteError;
use super::keys::KEY_LEN;
use super::transport::{LENGTH_PREFIX_LEN, MAX_PLAINTEXT_LEN, cipher, nonce};

/// The sending half of a Noise session (see the [module docs](super) for the wire format).
pub struct NoiseWriter {
    cipher: Aes256Gcm,
    /// The next message's nonce, that is the count of messages sealed.
    nonce: u64,
}

impl NoiseWriter {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> NoiseWriter {
        NoiseWriter {
            cipher: cipher(key),
            nonce: 0,
        }
    }

    /// Encrypts the concatenation of `plaintext`'s slices and appends the transport messages to
    /// `out`: `encrypted_len(total)` bytes, in messages of 65,519 plaintext bytes but the last.
    /// Returns the bytes appended. Empty plaintext appends nothing (Aptos never sends an empty
    /// message either).
    ///
    /// Every call ends on a message boundary, so the bytes appended can be written out at once.
    ///
    /// # Errors
    ///
    /// [`WriteError::NonceExhausted`] after 2^64 − 1 messages (unreachable in practice); `out`
    /// is left as it was.
    pub fn encrypt<'a, I>(&mut self, plaintext: I, out: &mut BytesMut) -> Result<usize, WriteError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let entry_len = out.len();
        let nonce_before = self.nonce;
        // Where the current message's prefix sits in `out`, once one is open.
        let mut open: Option<usize> = None;
        for mut chunk in plaintext {
            while !chunk.is_empty() {
                let start = *open.get_or_insert_with(|| {
                    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
                    out.len() - LENGTH_PREFIX_LEN
                });
                let filled = out.len() - start - LENGTH_PREFIX_LEN;
                let take = chunk.len().min(MAX_PLAINTEXT_LEN - filled);
                out.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if filled + take == MAX_PLAINTEXT_LEN {
                    open = None;
                    self.seal(out, start)
                        .inspect_err(|_| self.undo(out, entry_len, nonce_before))?;
                }
            }
        }
        if let Some(start) = open {
            self.seal(out, start)
                .inspect_err(|_| self.undo(out, entry_len, nonce_before))?;
        }
        Ok(out.len() - entry_len)
    }

    /// Encrypts `out[start + 2..]` in place, appends its tag and fills in its prefix.
    fn seal(&mut self, out: &mut BytesMut, start: usize) -> Result<(), WriteError> {
        // The Noise specification reserves nonce 2^64 - 1.
        if self.nonce == u64::MAX {
            return Err(WriteError::NonceExhausted);
        }
        let body = start + LENGTH_PREFIX_LEN;
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce(self.nonce), b"", &mut out[body..])
            .expect("a plaintext of at most 65,519 bytes is far below AES-GCM's limit");
        out.extend_from_slice(&tag);
        let len = u16::try_from(out.len() - body)
            .expect("at most 65,519 plaintext bytes and a 16-byte tag fit a u16");
        out[start..body].copy_from_slice(&len.to_be_bytes());
        self.nonce += 1;
        Ok(())
    }

    /// Takes back a call that failed part way. The messages it had sealed are cut from `out`
    /// before anyone could send them, so their nonces may be used again.
    fn undo(&mut self, out: &mut BytesMut, entry_len: usize, nonce_before: u64) {
        out.truncate(entry_len);
        self.nonce = nonce_before;
    }

    /// Messages sealed so far (the next message's nonce).
    pub fn messages_sent(&self) -> u64 {
        self.nonce
    }

    #[cfg(test)]
    pub(crate) fn set_nonce_for_test(&mut self, nonce: u64) {
        self.nonce = nonce;
    }
}

impl fmt::Debug for NoiseWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseWriter")
            .field("messages_sent", &self.nonce)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::transport::{TAG_LEN, encrypted_len};
    use aes_gcm::Aes256Gcm;

    const KEY: [u8; 32] = [7; 32];

    /// Opens every message in `wire` with a separately built cipher: the plaintexts, and
    /// each message's ciphertext length.
    fn open_all(wire: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let c: Aes256Gcm = cipher(&KEY);
        let (mut plain, mut lens, mut rest, mut n) = (Vec::new(), Vec::new(), wire, 0u64);
        while !rest.is_empty() {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let mut body = rest[2..2 + len].to_vec();
            let tag = body.split_off(len - TAG_LEN);
            c.decrypt_in_place_detached(&nonce(n), b"", &mut body, tag.as_slice().into())
                .expect("authentic message");
            plain.extend_from_slice(&body);
            lens.push(len);
            rest = &rest[2 + len..];
            n += 1;
        }
        (plain, lens)
    }

    #[test]
    fn one_small_message_byte_layout() {
        let mut w = NoiseWriter::new(&KEY);
        let mut out = BytesMut::new();
        assert_eq!(w.encrypt([&b"hello"[..]], &mut out), Ok(2 + 5 + 16));
        assert_eq!(&out[..2], [0x00, 0x15], "21 = 5 bytes and a 16-byte tag");
        let (plain, lens) = open_all(&out);
        assert_eq!(plain, b"hello");
        assert_eq!(lens, [21]);
        assert_eq!(w.messages_sent(), 1);
    }

    #[test]
    fn slices_are_packed_into_full_messages() {
        let mut w = NoiseWriter::new(&KEY);
        let a = vec![1u8; 40_000];
        let b = vec![2u8; 40_000];
        let c = vec![3u8; 50_000];
        let mut out = BytesMut::new();
        let n = w.encrypt([&a[..], &b[..], &c[..]], &mut out).unwrap();
        assert_eq!(n, encrypted_len(130_000));
        let (plain, lens) = open_all(&out);
        assert_eq!(plain, [a, b, c].concat());
        assert_eq!(lens, [65535, 130_000 - 65519 + 16]);
        assert_eq!(w.messages_sent(), 2);
    }

    #[test]
    fn exactly_full_message_and_empty_input() {
        let mut w = NoiseWriter::new(&KEY);
        let mut out = BytesMut::new();
        assert_eq!(w.encrypt([], &mut out), Ok(0));
        assert_eq!(w.encrypt([&[][..], &[][..]], &mut out), Ok(0));
        assert!(out.is_empty());
        let full = vec![9u8; MAX_PLAINTEXT_LEN];
        w.encrypt([&full[..]], &mut out).unwrap();
        assert_eq!(&out[..2], [0xff, 0xff]);
        assert_eq!(out.len(), 2 + 65535);
        assert_eq!(open_all(&out).0, full);
    }

    #[test]
    fn calls_append_and_nonces_continue() {
        let mut w = NoiseWriter::new(&KEY);
        let mut out = BytesMut::from(&b"kept"[..]);
        w.encrypt([&b"one"[..]], &mut out).unwrap();
        w.encrypt([&b"two"[..]], &mut out).unwrap();
        assert_eq!(&out[..4], b"kept");
        assert_eq!(open_all(&out[4..]).0, b"onetwo");
    }

    #[test]
    fn nonce_exhaustion_leaves_output_untouched() {
        let mut w = NoiseWriter::new(&KEY);
        w.set_nonce_for_test(u64::MAX - 1);
        let mut out = BytesMut::new();
        let big = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert_eq!(
            w.encrypt([&big[..]], &mut out),
            Err(WriteError::NonceExhausted)
        );
        assert!(out.is_empty());
        assert_eq!(
            w.messages_sent(),
            u64::MAX - 1,
            "the first message is taken back"
        );
        w.encrypt([&b"last"[..]], &mut out).unwrap();
        assert_eq!(
            w.encrypt([&b"x"[..]], &mut out),
            Err(WriteError::NonceExhausted)
        );
    }
}
