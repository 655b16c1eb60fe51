//! [`Outgoing`]: the writer thread's ciphertext on its way to the socket, and the exact
//! accounting of which plaintext it carries. Sans-IO: plaintext goes in through
//! [`seal`](Outgoing::seal), the bytes to write come out of [`unwritten`](Outgoing::unwritten),
//! and [`wrote`](Outgoing::wrote) says how many the kernel took and answers how many
//! plaintext bytes that completed.
//!
//! A plaintext byte counts as sent only when the last byte of the Noise message that carries
//! it has been written: before that, the remote cannot open the message, so none of its bytes
//! has reached anyone. `wrote` therefore reports plaintext in whole messages, never a part of
//! one, which is what lets the writer settle a frame's completion (its mark in a batch is a
//! plaintext offset) exactly when its ciphertext is whole on the wire.
//!
//! The buffer is reused: once everything sealed has been written it is cleared, keeping its
//! capacity, so a steady stream allocates nothing.

use std::collections::VecDeque;

use bytes::BytesMut;

use super::error::WriteError;
use super::transport::{LENGTH_PREFIX_LEN, MAX_PLAINTEXT_LEN, TAG_LEN};
use super::writer::NoiseWriter;

/// Sealed messages not yet written whole, and the plaintext each carries.
#[derive(Debug)]
pub(crate) struct Outgoing {
    writer: NoiseWriter,
    /// Sealed messages, prefix and tag included.
    buf: BytesMut,
    /// Bytes of `buf` the kernel took.
    written: usize,
    /// For each message in `buf` not yet written whole, in order: where its last byte ends in
    /// `buf`, and the plaintext bytes it carries.
    ends: VecDeque<(usize, usize)>,
}

impl Outgoing {
    pub(crate) fn new(writer: NoiseWriter) -> Outgoing {
        Outgoing {
            writer,
            buf: BytesMut::new(),
            written: 0,
            ends: VecDeque::new(),
        }
    }

    /// True when every sealed byte has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    /// Seals the first `max` bytes (or all, if fewer) of the concatenation of `plaintext`'s
    /// slices, behind whatever is still unwritten. Returns the plaintext bytes sealed.
    ///
    /// # Errors
    ///
    /// [`WriteError::NonceExhausted`] (unreachable in practice); nothing is sealed then.
    pub(crate) fn seal<'a, I>(&mut self, plaintext: I, max: usize) -> Result<usize, WriteError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        if self.is_empty() {
            // Everything sealed before is on the wire: start again at the front.
            self.buf.clear();
            self.written = 0;
        }
        let mut left = max;
        let capped = plaintext.into_iter().map_while(|s| {
            if left == 0 {
                return None;
            }
            let take = s.len().min(left);
            left -= take;
            Some(&s[..take])
        });
        let start = self.buf.len();
        self.writer.encrypt(capped, &mut self.buf)?;
        let sealed = max - left;
        // `encrypt` packs full messages but the last: their ends follow from the total.
        let (mut end, mut rest) = (start, sealed);
        while rest > 0 {
            let p = rest.min(MAX_PLAINTEXT_LEN);
            end += LENGTH_PREFIX_LEN + p + TAG_LEN;
            self.ends.push_back((end, p));
            rest -= p;
        }
        debug_assert_eq!(end, self.buf.len());
        Ok(sealed)
    }

    /// The sealed bytes not yet written.
    pub(crate) fn unwritten(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// Records `n` more bytes of [`unwritten`](Outgoing::unwritten) as taken by the kernel.
    /// Returns the plaintext bytes of the messages this made whole on the wire.
    pub(crate) fn wrote(&mut self, n: usize) -> usize {
        debug_assert!(
            n <= self.buf.len() - self.written,
            "wrote more than was unwritten"
        );
        self.written = (self.written + n).min(self.buf.len());
        let mut completed = 0;
        while let Some(&(end, plain)) = self.ends.front() {
            if end > self.written {
                break;
            }
            completed += plain;
            self.ends.pop_front();
        }
        completed
    }

    /// Messages sealed over the session's life (the next message's nonce).
    #[cfg(test)]
    pub(crate) fn messages_sealed(&self) -> u64 {
        self.writer.messages_sent()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::PeerId;
    use crate::noise::reader::NoiseReader;
    use crate::noise::transport::encrypted_len;

    const KEY: [u8; 32] = [3; 32];

    fn outgoing() -> Outgoing {
        Outgoing::new(NoiseWriter::new(&KEY))
    }

    fn open(wire: &[u8]) -> Vec<u8> {
        let mut r = NoiseReader::new(&KEY, PeerId::default(), Arc::default());
        let mut out = BytesMut::new();
        r.decrypt(wire, &mut out).expect("authentic");
        assert!(r.is_idle(), "whole messages only");
        out.to_vec()
    }

    #[test]
    fn small_plaintext_completes_only_with_the_last_byte_of_its_message() {
        let mut o = outgoing();
        assert!(o.is_empty());
        assert_eq!(o.seal([&b"hello "[..], &b"world"[..]], usize::MAX), Ok(11));
        let wire = o.unwritten().to_vec();
        assert_eq!(wire.len(), encrypted_len(11));
        for _ in 0..wire.len() - 1 {
            assert_eq!(o.wrote(1), 0, "no plaintext before the tag's last byte");
        }
        assert_eq!(o.wrote(1), 11);
        assert!(o.is_empty());
        assert_eq!(open(&wire), b"hello world");
    }

    #[test]
    fn each_full_message_completes_its_own_plaintext() {
        let mut o = outgoing();
        let data = vec![7u8; 2 * MAX_PLAINTEXT_LEN + 100];
        assert_eq!(o.seal([&data[..]], usize::MAX), Ok(data.len()));
        let wire = o.unwritten().to_vec();
        let first = LENGTH_PREFIX_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;
        assert_eq!(o.wrote(first - 1), 0);
        assert_eq!(o.wrote(1), MAX_PLAINTEXT_LEN);
        // The second and most of the third in one write.
        assert_eq!(o.wrote(first + 50), MAX_PLAINTEXT_LEN);
        assert_eq!(o.wrote(o.unwritten().len()), 100);
        assert_eq!(open(&wire), data);
        assert_eq!(o.messages_sealed(), 3);
    }

    #[test]
    fn seal_takes_at_most_max_and_cuts_a_slice() {
        let mut o = outgoing();
        let (a, b) = (vec![1u8; 30], vec![2u8; 30]);
        assert_eq!(o.seal([&a[..], &b[..]], 40), Ok(40));
        assert_eq!(o.wrote(o.unwritten().len()), 40);
        // The rest, from where the caller's accounting says it starts.
        assert_eq!(o.seal([&b[10..]], 40), Ok(20));
        assert_eq!(o.wrote(o.unwritten().len()), 20);
        assert_eq!(o.seal([], 40), Ok(0));
        assert!(o.is_empty());
    }

    #[test]
    fn sealing_behind_unwritten_bytes_keeps_the_order_and_the_buffer_is_reused() {
        let mut o = outgoing();
        o.seal([&b"one"[..]], usize::MAX).unwrap();
        let mut wire = o.unwritten()[..5].to_vec();
        assert_eq!(o.wrote(5), 0);
        o.seal([&b"two"[..]], usize::MAX).unwrap();
        let mut completed = Vec::new();
        while !o.is_empty() {
            let n = o.unwritten().len().min(7);
            wire.extend_from_slice(&o.unwritten()[..n]);
            completed.push(o.wrote(n));
        }
        assert_eq!(completed.iter().sum::<usize>(), 6);
        assert_eq!(open(&wire), b"onetwo");
        let capacity = o.buf.capacity();
        o.seal([&b"three"[..]], usize::MAX).unwrap();
        assert_eq!(o.buf.capacity(), capacity, "cleared, not reallocated");
        assert_eq!(o.written, 0);
    }

    #[test]
    fn any_cut_of_the_writes_settles_each_message_once() {
        let mut o = outgoing();
        let sizes = [1usize, 65519, 65520, 3, 200_000];
        let mut sealed = 0;
        for s in sizes {
            let data = vec![9u8; s];
            let mut fed = 0;
            while fed < s {
                fed += o.seal([&data[fed..]], 100_000).unwrap();
            }
            sealed += s;
        }
        let mut completed = 0;
        let mut step = 1;
        while !o.is_empty() {
            let n = o.unwritten().len().min(step);
            completed += o.wrote(n);
            step = step * 3 % 70_001 + 1;
        }
        assert_eq!(completed, sealed);
    }
}
