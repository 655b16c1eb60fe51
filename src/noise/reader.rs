//! [`NoiseReader`]: the receiving half of a Noise session, owned by the reader thread. An
//! explicit state machine (`Prefix` → `Body { len }` → `Prefix` …, or `Failed`) that takes
//! ciphertext in any chunking and appends the plaintext of every complete message to the
//! caller's buffer — the reader thread hands its frame decoder's input buffer, so plaintext
//! lands where frames are decoded from.
//!
//! The length is checked before anything is reserved: a prefix of 0 or under 16 is refused,
//! and as a `u16` it cannot announce more than the 65,535-byte limit. The only buffer the
//! reader owns holds one incomplete message (at most 65,535 bytes), and only while it is
//! incomplete: a message that arrives whole in one input is decrypted from the input straight
//! into the caller's buffer. Plaintext of a message that fails authentication never reaches
//! the caller.

use std::fmt;
use std::sync::Arc;

use aes_gcm::{AeadInPlace, Aes256Gcm};
use bytes::BytesMut;

use super::config::Counters;
use super::error::ReadError;
use super::keys::KEY_LEN;
use super::transport::{LENGTH_PREFIX_LEN, TAG_LEN, cipher, nonce};
use crate::PeerId;

/// Where the reader is within the current message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Waiting for the 2-byte length; `have` of them are in `prefix`.
    Prefix { prefix: [u8; 2], have: usize },
    /// The length is known and valid; the message's first bytes are in `pending`.
    Body { len: usize },
    /// An error was reported; every later call reports it again.
    Failed(ReadError),
}

/// The receiving half of a Noise session (see the [module docs](super) for the wire format).
pub struct NoiseReader {
    cipher: Aes256Gcm,
    /// The next message's nonce, that is the count of messages opened.
    nonce: u64,
    state: ReadState,
    /// The incomplete message's bytes (never more than its announced length).
    pending: Vec<u8>,
    remote: PeerId,
    counters: Arc<Counters>,
}

impl NoiseReader {
    pub(crate) fn new(key: &[u8; KEY_LEN], remote: PeerId, counters: Arc<Counters>) -> NoiseReader {
        NoiseReader {
            cipher: cipher(key),
            nonce: 0,
            state: ReadState::Prefix {
                prefix: [0; 2],
                have: 0,
            },
            pending: Vec::new(),
            remote,
            counters,
        }
    }

    /// Takes `ciphertext` (all of it: an incomplete message at its end is kept for the next
    /// call) and appends the plaintext of every message it completes to `out`.
    ///
    /// Returns `Ok(None)` if no message was completed ("not enough bytes yet"), otherwise
    /// `Ok(Some(n))` with the plaintext bytes appended (0 for an empty message).
    ///
    /// # Errors
    ///
    /// A [`ReadError`] for a length under 16 or a message that fails authentication. `out`
    /// then holds the plaintext of the messages before the bad one, which did authenticate.
    /// The error is fatal: every later call returns it again.
    pub fn decrypt(
        &mut self,
        mut ciphertext: &[u8],
        out: &mut BytesMut,
    ) -> Result<Option<usize>, ReadError> {
        let mut appended: Option<usize> = None;
        loop {
            match self.state {
                ReadState::Failed(e) => return Err(e),
                ReadState::Prefix { mut prefix, have } => {
                    if ciphertext.is_empty() {
                        return Ok(appended);
                    }
                    let take = (LENGTH_PREFIX_LEN - have).min(ciphertext.len());
                    prefix[have..have + take].copy_from_slice(&ciphertext[..take]);
                    ciphertext = &ciphertext[take..];
                    if have + take < LENGTH_PREFIX_LEN {
                        self.state = ReadState::Prefix {
                            prefix,
                            have: have + take,
                        };
                        return Ok(appended);
                    }
                    let len = usize::from(u16::from_be_bytes(prefix));
                    self.state = ReadState::Body { len };
                    if len == 0 {
                        return Err(self.fail(ReadError::EmptyMessage));
                    }
                    if len < TAG_LEN {
                        return Err(self.fail(ReadError::MessageTooShort { len }));
                    }
                }
                ReadState::Body { len } => {
                    let opened = if self.pending.is_empty() && ciphertext.len() >= len {
                        // The whole message is in the input: no copy into `pending`.
                        let (message, rest) = ciphertext.split_at(len);
                        ciphertext = rest;
                        open(&self.cipher, self.nonce, message, out)
                    } else {
                        if ciphertext.is_empty() {
                            return Ok(appended);
                        }
                        // Capacity for exactly this message (reserve_exact counts from the
                        // current length), after the length check; a no-op once reserved.
                        self.pending.reserve_exact(len - self.pending.len());
                        let take = (len - self.pending.len()).min(ciphertext.len());
                        self.pending.extend_from_slice(&ciphertext[..take]);
                        ciphertext = &ciphertext[take..];
                        if self.pending.len() < len {
                            return Ok(appended);
                        }
                        let opened = open(&self.cipher, self.nonce, &self.pending, out);
                        self.pending.clear();
                        opened
                    };
                    match opened {
                        Ok(n) => {
                            self.nonce += 1;
                            *appended.get_or_insert(0) += n;
                            self.state = ReadState::Prefix {
                                prefix: [0; 2],
                                have: 0,
                            };
                        }
                        Err(e) => return Err(self.fail(e)),
                    }
                }
            }
        }
    }

    /// To call when the stream ends: checks that it ended between messages.
    ///
    /// # Errors
    ///
    /// [`ReadError::Truncated`] if a message was incomplete (fatal, as any read error), or the
    /// error already reported.
    pub fn finish(&mut self) -> Result<(), ReadError> {
        match self.state {
            ReadState::Failed(e) => Err(e),
            ReadState::Prefix { have: 0, .. } => Ok(()),
            ReadState::Prefix { have, .. } => Err(self.fail(ReadError::Truncated {
                received: have,
                expected: LENGTH_PREFIX_LEN,
            })),
            ReadState::Body { len } => Err(self.fail(ReadError::Truncated {
                received: LENGTH_PREFIX_LEN + self.pending.len(),
                expected: LENGTH_PREFIX_LEN + len,
            })),
        }
    }

    /// True between messages: the end of the stream here is a clean close.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ReadState::Prefix { have: 0, .. })
    }

    /// Bytes that would complete the current message: what is missing of its prefix, or of
    /// its body once the prefix is known (0 after an error). Reading at most this much never
    /// reads past the message, which is how a caller that must stop at a message boundary
    /// (the network's upgrade, before the peer's reader takes over) reads.
    pub fn message_remaining(&self) -> usize {
        match self.state {
            ReadState::Prefix { have, .. } => LENGTH_PREFIX_LEN - have,
            ReadState::Body { len } => len - self.pending.len(),
            ReadState::Failed(_) => 0,
        }
    }

    /// Bytes of an incomplete message held (its prefix included).
    pub fn buffered(&self) -> usize {
        match self.state {
            ReadState::Prefix { have, .. } => have,
            ReadState::Body { .. } => LENGTH_PREFIX_LEN + self.pending.len(),
            ReadState::Failed(_) => 0,
        }
    }

    /// Messages opened so far (the next message's nonce).
    pub fn messages_received(&self) -> u64 {
        self.nonce
    }

    /// Enters the failed state: counts the error, logs it (thinned), and drops the buffer.
    fn fail(&mut self, error: ReadError) -> ReadError {
        self.state = ReadState::Failed(error);
        self.pending = Vec::new();
        if self.counters.read_failed(error) {
            log::warn!("noise: peer {}: {error}; closing", self.remote);
        }
        error
    }

    #[cfg(test)]
    pub(crate) fn set_nonce_for_test(&mut self, nonce: u64) {
        self.nonce = nonce;
    }

    #[cfg(test)]
    pub(crate) fn pending_capacity(&self) -> usize {
        self.pending.capacity()
    }
}

/// Authenticates and decrypts one message (`len` bytes of ciphertext and tag) into the end of
/// `out`, returning the plaintext's length. On failure `out` is as it was.
fn open(
    cipher: &Aes256Gcm,
    n: u64,
    message: &[u8],
    out: &mut BytesMut,
) -> Result<usize, ReadError> {
    // The Noise specification reserves nonce 2^64 - 1.
    if n == u64::MAX {
        return Err(ReadError::NonceExhausted);
    }
    let (ciphertext, tag) = message.split_at(message.len() - TAG_LEN);
    let start = out.len();
    out.extend_from_slice(ciphertext);
    match cipher.decrypt_in_place_detached(&nonce(n), b"", &mut out[start..], tag.into()) {
        Ok(()) => Ok(ciphertext.len()),
        Err(_) => {
            out.truncate(start);
            Err(ReadError::Decrypt { message: n })
        }
    }
}

impl fmt::Debug for NoiseReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseReader")
            .field("remote", &self.remote)
            .field("messages_received", &self.nonce)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::writer::NoiseWriter;

    const KEY: [u8; 32] = [5; 32];

    fn pair() -> (NoiseWriter, NoiseReader, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let r = NoiseReader::new(&KEY, PeerId::from_u64(9), counters.clone());
        (NoiseWriter::new(&KEY), r, counters)
    }

    fn seal(w: &mut NoiseWriter, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        w.encrypt(parts.iter().copied(), &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn whole_messages_in_one_input() {
        let (mut w, mut r, _) = pair();
        let mut wire = seal(&mut w, &[b"first"]);
        wire.extend(seal(&mut w, &[b"second"]));
        let mut out = BytesMut::new();
        assert_eq!(r.decrypt(&wire, &mut out), Ok(Some(11)));
        assert_eq!(&out[..], b"firstsecond");
        assert!(r.is_idle());
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(r.messages_received(), 2);
        assert_eq!(r.pending_capacity(), 0, "nothing was buffered");
    }

    #[test]
    fn one_byte_at_a_time() {
        let (mut w, mut r, _) = pair();
        let wire = seal(&mut w, &[b"hello ", b"world"]);
        let mut out = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            let got = r.decrypt(std::slice::from_ref(b), &mut out).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "early plaintext at byte {i}");
                assert_eq!(r.buffered(), i + 1);
            } else {
                assert_eq!(got, Some(11));
            }
        }
        assert_eq!(&out[..], b"hello world");
    }

    #[test]
    fn message_remaining_stops_at_the_boundary() {
        let (mut w, mut r, _) = pair();
        let wire = seal(&mut w, &[b"abc"]);
        let mut out = BytesMut::new();
        let mut at = 0;
        while at < wire.len() {
            let n = r.message_remaining();
            assert!(n > 0 && at + n <= wire.len(), "{n} at {at}");
            r.decrypt(&wire[at..at + 1], &mut out).unwrap();
            at += 1;
        }
        assert_eq!(&out[..], b"abc");
        assert_eq!(r.message_remaining(), 2, "the next prefix");
        assert_eq!(r.decrypt(&[0, 0], &mut out), Err(ReadError::EmptyMessage));
        assert_eq!(r.message_remaining(), 0);
    }

    #[test]
    fn empty_input_and_empty_message() {
        let (_, mut r, _) = pair();
        let mut out = BytesMut::new();
        assert_eq!(r.decrypt(&[], &mut out), Ok(None));
        // An empty message is 16 bytes of tag; valid, with no plaintext.
        let c = cipher(&KEY);
        let mut empty = [0u8; 0];
        let tag = c
            .encrypt_in_place_detached(&nonce(0), b"", &mut empty)
            .unwrap();
        let mut wire = vec![0x00, 0x10];
        wire.extend_from_slice(&tag);
        assert_eq!(r.decrypt(&wire, &mut out), Ok(Some(0)));
        assert!(out.is_empty());
    }

    #[test]
    fn zero_length_prefix_is_refused() {
        let (_, mut r, counters) = pair();
        let mut out = BytesMut::new();
        assert_eq!(r.decrypt(&[0, 0], &mut out), Err(ReadError::EmptyMessage));
        assert_eq!(
            r.decrypt(&[1, 2, 3], &mut out),
            Err(ReadError::EmptyMessage)
        );
        assert_eq!(counters.snapshot().empty_messages, 1, "counted once");
    }

    #[test]
    fn prefix_shorter_than_a_tag_is_refused_before_reserving() {
        for len in 1..16u16 {
            let (_, mut r, _) = pair();
            let mut out = BytesMut::new();
            let got = r.decrypt(&len.to_be_bytes(), &mut out);
            assert_eq!(got, Err(ReadError::MessageTooShort { len: len.into() }));
            assert_eq!(r.pending_capacity(), 0);
        }
    }

    #[test]
    fn largest_prefix_reserves_at_most_one_message() {
        let (_, mut r, _) = pair();
        let mut out = BytesMut::new();
        assert_eq!(r.decrypt(&[0xff, 0xff, 1, 2, 3], &mut out), Ok(None));
        assert!(r.pending_capacity() <= 65535, "{}", r.pending_capacity());
        assert_eq!(r.buffered(), 5);
        assert_eq!(
            r.finish(),
            Err(ReadError::Truncated {
                received: 5,
                expected: 65537
            })
        );
    }

    #[test]
    fn a_full_message_a_byte_at_a_time_reserves_it_once() {
        // Found by the fuzz target: reserving the message's length on every call, instead of
        // what it still lacks, grew the buffer past 65,535 bytes and reallocated it each time.
        let (mut w, mut r, _) = pair();
        let mut wire = BytesMut::new();
        w.encrypt([&[3u8; 65519][..]], &mut wire).unwrap();
        let mut out = BytesMut::new();
        let mut capacities = std::collections::BTreeSet::new();
        for b in &wire[..wire.len() - 1] {
            assert_eq!(r.decrypt(std::slice::from_ref(b), &mut out), Ok(None));
            capacities.insert(r.pending_capacity());
        }
        // Nothing while the prefix is incomplete, then exactly the message.
        let (n, max) = (capacities.len(), capacities.last().copied());
        assert!(
            n == 2 && max == Some(65535),
            "{n} capacities, up to {max:?}"
        );
        assert_eq!(
            r.decrypt(&wire[wire.len() - 1..], &mut out),
            Ok(Some(65519))
        );
        assert_eq!(&out[..], [3u8; 65519]);
    }

    #[test]
    fn tampered_message_yields_no_plaintext_and_stays_failed() {
        let (mut w, mut r, counters) = pair();
        let good = seal(&mut w, &[b"good"]);
        let mut bad = seal(&mut w, &[b"evil"]);
        bad[3] ^= 1;
        let after = seal(&mut w, &[b"after"]);
        let mut out = BytesMut::new();
        let wire = [good, bad, after].concat();
        assert_eq!(
            r.decrypt(&wire, &mut out),
            Err(ReadError::Decrypt { message: 1 })
        );
        assert_eq!(&out[..], b"good", "only the authentic message");
        assert_eq!(
            r.decrypt(b"", &mut out),
            Err(ReadError::Decrypt { message: 1 })
        );
        assert_eq!(r.finish(), Err(ReadError::Decrypt { message: 1 }));
        assert_eq!(counters.snapshot().decrypt_failures, 1);
    }

    #[test]
    fn reordered_messages_fail() {
        let (mut w, mut r, _) = pair();
        let first = seal(&mut w, &[b"1"]);
        let second = seal(&mut w, &[b"2"]);
        let mut out = BytesMut::new();
        assert_eq!(
            r.decrypt(&second, &mut out),
            Err(ReadError::Decrypt { message: 0 })
        );
        drop(first);
    }

    #[test]
    fn truncation_inside_prefix_and_body() {
        let (mut w, mut r, _) = pair();
        let wire = seal(&mut w, &[b"abc"]);
        let mut out = BytesMut::new();
        r.decrypt(&wire[..1], &mut out).unwrap();
        assert_eq!(
            r.finish(),
            Err(ReadError::Truncated {
                received: 1,
                expected: 2
            })
        );
        let (mut w, mut r, counters) = pair();
        let wire = seal(&mut w, &[b"abc"]);
        r.decrypt(&wire[..10], &mut out).unwrap();
        assert_eq!(
            r.finish(),
            Err(ReadError::Truncated {
                received: 10,
                expected: 21
            })
        );
        assert_eq!(counters.snapshot().truncated_messages, 1);
    }

    #[test]
    fn receive_nonce_exhaustion() {
        let (mut w, mut r, _) = pair();
        w.set_nonce_for_test(u64::MAX - 1);
        r.set_nonce_for_test(u64::MAX - 1);
        let mut out = BytesMut::new();
        let wire = seal(&mut w, &[b"last"]);
        assert_eq!(r.decrypt(&wire, &mut out), Ok(Some(4)));
        let mut forged = vec![0x00, 0x10];
        forged.extend([0u8; 16]);
        assert_eq!(r.decrypt(&forged, &mut out), Err(ReadError::NonceExhausted));
    }
}
