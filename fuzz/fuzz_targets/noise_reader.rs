//! Ciphertext, genuine or altered, in arbitrary chunks, into `NoiseReader`.
//!
//! Input: one control byte: bit 0 picks the mode, bits 1..7 the chunk size (1 to 128).
//! * Mode 0 (raw): the rest is the ciphertext stream, fed as it is.
//! * Mode 1 (sealed): byte 1 names an alteration (0 none, 1 flip a bit, 2 cut, 3 insert a
//!   byte), bytes 2..4 its position (big-endian, modulo the stream's length), byte 4 the
//!   repetitions (low nibble n: 2^n copies of the slices in one `encrypt` call, so a short
//!   input reaches the 65,519-byte message boundary; top two bits: 1 to 4 calls; at most
//!   `MAX_SEALED` bytes in all); the rest is the plaintext, cut into slices at each `ff` byte.
//!   A writer with the reader's key seals it, then the alteration is applied.
//!
//! Checks: the reader never panics; chunking never changes the outcome (the same stream in one
//! piece gives the same plaintext and the same error); it never returns plaintext beyond the
//! input's length; in mode 1 the plaintext returned is always a prefix of what was sealed (no
//! altered, reordered or invented byte ever comes out), all of it when nothing was altered,
//! and never all of it with a clean end when a bit was flipped or a byte inserted.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use syncpeer::noise::fuzzing::transport_pair;
use syncpeer::noise::{NoiseReader, ReadError};

const KEY: [u8; 32] = [0x42; 32];

/// Plaintext sealed per input, at most: two full messages and some, so the message boundary is
/// crossed while an input stays cheap (a few milliseconds under AddressSanitizer).
const MAX_SEALED: usize = 140_000;
/// Slices per `encrypt` call, at most (empty ones cost nothing to seal but a slot each).
const MAX_SLICES: usize = 4096;

/// What mode 1 did to the sealed stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alteration {
    None,
    Flip,
    Cut,
    Insert,
}

/// Feeds `wire` in `chunk`-sized pieces until an error; then checks the end of the stream.
fn feed(r: &mut NoiseReader, wire: &[u8], chunk: usize) -> (Vec<u8>, Result<(), ReadError>) {
    let mut out = BytesMut::new();
    for piece in wire.chunks(chunk) {
        if let Err(e) = r.decrypt(piece, &mut out) {
            return (out.to_vec(), Err(e));
        }
    }
    let end = r.finish();
    (out.to_vec(), end)
}

/// Mode 1: seals the plaintext described by `rest`, then alters it. `None` if `rest` is too
/// short to say.
fn sealed(rest: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Alteration)> {
    let [kind, hi, lo, repeat, plaintext @ ..] = rest else {
        return None;
    };
    let (mut writer, _) = transport_pair(&KEY);
    let parts: Vec<&[u8]> = plaintext.split(|b| *b == 0xff).collect();
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    let copies = 1usize << (repeat & 0x0f);
    let per_call = (plaintext.len() * copies).min(MAX_SEALED);
    for _ in 0..=usize::from(repeat >> 6) {
        if sent.len() + per_call > MAX_SEALED {
            break;
        }
        // The slices, repeated, cut off after `per_call` bytes or `MAX_SLICES` slices.
        let mut budget = per_call;
        let mut call: Vec<&[u8]> = Vec::new();
        for p in parts.iter().cycle().take(parts.len() * copies) {
            if call.len() == MAX_SLICES || (budget == 0 && !p.is_empty()) {
                break;
            }
            let p = &p[..p.len().min(budget)];
            budget -= p.len();
            call.push(p);
        }
        writer.encrypt(call.iter().copied(), &mut wire).unwrap();
        call.iter().for_each(|p| sent.extend_from_slice(p));
    }
    let mut wire = wire.to_vec();
    let at = usize::from(u16::from_be_bytes([*hi, *lo]));
    let alteration = match kind % 4 {
        1 if !wire.is_empty() => {
            let i = at % wire.len();
            wire[i] ^= 1 << (lo % 8);
            Alteration::Flip
        }
        2 if !wire.is_empty() => {
            wire.truncate(at % wire.len());
            Alteration::Cut
        }
        3 => {
            wire.insert(at % (wire.len() + 1), *hi);
            Alteration::Insert
        }
        _ => Alteration::None,
    };
    Some((wire, sent, alteration))
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(ctl >> 1);
    let (wire, sent) = if ctl & 1 == 0 {
        (rest.to_vec(), None)
    } else {
        let Some((wire, sent, alteration)) = sealed(rest) else {
            return;
        };
        (wire, Some((sent, alteration)))
    };

    let (_, mut chunked) = transport_pair(&KEY);
    let (out, end) = feed(&mut chunked, &wire, chunk);
    let (_, mut whole) = transport_pair(&KEY);
    let (out_whole, end_whole) = feed(&mut whole, &wire, wire.len().max(1));
    assert_eq!(out, out_whole, "chunking changed the plaintext");
    assert_eq!(end, end_whole, "chunking changed the outcome");
    assert!(out.len() <= wire.len(), "more plaintext than input");
    if let Some((sent, alteration)) = sent {
        assert!(sent.starts_with(&out), "plaintext that was not sent");
        match alteration {
            Alteration::None => {
                assert_eq!(out, sent, "genuine stream not fully decrypted");
                assert_eq!(end, Ok(()), "genuine stream refused");
            }
            Alteration::Flip | Alteration::Insert => {
                assert!(end.is_err() || out != sent, "altered stream accepted whole");
            }
            Alteration::Cut => {}
        }
    }
});
