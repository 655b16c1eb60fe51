//! The published `Noise_IK_25519_AESGCM_SHA256` test vectors (cacophony's, which the Aptos
//! crypto crate tests against, noise-c's and snow's; `tests/data/`), run through this module's
//! own layers: the handshake through `ik.rs` with the vectors' ephemeral keys, and every
//! transport message through [`NoiseWriter`] and [`NoiseReader`] built from the split keys, so
//! that the key order of the split, the nonce layout and the framing are all checked against
//! ciphertexts computed by other implementations.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;

use super::config::Counters;
use super::ik::{IkInitiator, IkResponder, Split};
use super::keys::StaticKeypair;
use super::reader::NoiseReader;
use super::writer::NoiseWriter;
use crate::PeerId;

const VECTORS: &str = include_str!("../../tests/data/noise_ik_25519_aesgcm_sha256.txt");

struct Vector {
    name: String,
    fields: HashMap<String, Vec<u8>>,
    messages: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Vector {
    fn key(&self, field: &str) -> [u8; 32] {
        self.fields[field]
            .as_slice()
            .try_into()
            .unwrap_or_else(|_| panic!("{}: {field} is not 32 bytes", self.name))
    }
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn parse() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut current: Option<Vector> = None;
    for line in VECTORS.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("vector"), Some(name), None) => {
                current = Some(Vector {
                    name: name.to_owned(),
                    fields: HashMap::new(),
                    messages: Vec::new(),
                });
            }
            (Some("message"), Some(p), Some(c)) => {
                current
                    .as_mut()
                    .unwrap()
                    .messages
                    .push((unhex(p), unhex(c)));
            }
            (Some("end"), None, None) => out.push(current.take().unwrap()),
            (Some(field), Some(value), None) => {
                current
                    .as_mut()
                    .unwrap()
                    .fields
                    .insert(field.to_owned(), unhex(value));
            }
            _ => panic!("bad vector line: {line}"),
        }
    }
    out
}

fn halves(keys: &Split) -> (NoiseWriter, NoiseReader) {
    let reader = NoiseReader::new(
        &keys.recv,
        PeerId::from_u64(0),
        Arc::new(Counters::default()),
    );
    (NoiseWriter::new(&keys.send), reader)
}

/// Fails with the first difference from the vector.
macro_rules! same {
    ($got:expr, $want:expr, $($what:tt)+) => {
        if $got != $want {
            return Err(format!($($what)+));
        }
    };
}

fn run(v: &Vector) -> Result<(), String> {
    let name = &v.name;
    let prologue = &v.fields["prologue"];
    let (init_static, resp_static) = (v.key("init_static"), v.key("resp_static"));
    let resp_public = StaticKeypair::from_private_bytes(resp_static).public_key();
    same!(
        *resp_public.as_bytes(),
        v.key("init_remote_static"),
        "{name}: responder key"
    );
    let init_public = StaticKeypair::from_private_bytes(init_static).public_key();
    let mut messages = v.messages.iter();
    let fail = |what: &str, e: snow::Error| format!("{name}: {what}: {e}");

    // -> e, es, s, ss
    let (payload, expected) = messages.next().unwrap();
    let mut first = vec![0u8; expected.len()];
    let (initiator, len) = IkInitiator::start(
        &init_static,
        resp_public.as_bytes(),
        prologue,
        payload,
        Some(&v.key("init_ephemeral")),
        &mut first,
    )
    .map_err(|e| fail("first message", e))?;
    same!(len, expected.len(), "{name}: first message length");
    same!(&first, expected, "{name}: first message");
    let mut received = vec![0u8; first.len()];
    let (responder, remote, n) = IkResponder::read(
        &resp_static,
        prologue,
        &first,
        Some(&v.key("resp_ephemeral")),
        &mut received,
    )
    .map_err(|e| fail("reading the first message", e))?;
    same!(&received[..n], payload, "{name}: first payload");
    same!(
        remote,
        *init_public.as_bytes(),
        "{name}: initiator's static key"
    );

    // <- e, ee, se
    let (payload, expected) = messages.next().unwrap();
    let mut second = vec![0u8; expected.len()];
    let (len, resp_keys) = responder
        .answer(payload, &mut second)
        .map_err(|e| fail("second message", e))?;
    same!(&second[..len], expected, "{name}: second message");
    let mut received = vec![0u8; second.len()];
    let (n, init_keys) = initiator
        .finish(&second, &mut received)
        .map_err(|e| fail("reading the second message", e))?;
    same!(&received[..n], payload, "{name}: second payload");
    same!(
        init_keys.handshake_hash,
        resp_keys.handshake_hash,
        "{name}: hashes"
    );
    if let Some(h) = v.fields.get("handshake_hash") {
        same!(
            &init_keys.handshake_hash[..],
            &h[..],
            "{name}: handshake hash"
        );
    }

    // Transport: initiator first, then turn about.
    let (mut init_w, mut init_r) = halves(&init_keys);
    let (mut resp_w, mut resp_r) = halves(&resp_keys);
    for (i, (payload, expected)) in messages.enumerate() {
        let (w, r) = if i % 2 == 0 {
            (&mut init_w, &mut resp_r)
        } else {
            (&mut resp_w, &mut init_r)
        };
        let mut wire = BytesMut::new();
        w.encrypt([&payload[..]], &mut wire)
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(expected.len()).unwrap().to_be_bytes();
        same!(&wire[..2], len, "{name}: transport message {i} prefix");
        same!(&wire[2..], &expected[..], "{name}: transport message {i}");
        let mut plain = BytesMut::new();
        let opened = r.decrypt(&wire, &mut plain).map_err(|e| e.to_string())?;
        same!(
            opened,
            Some(payload.len()),
            "{name}: transport message {i} length"
        );
        same!(
            &plain[..],
            &payload[..],
            "{name}: transport message {i} plaintext"
        );
    }
    Ok(())
}

#[test]
fn every_vector_passes() {
    let vectors = parse();
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["cacophony", "noise-c", "snow"]);
    for v in &vectors {
        assert!(v.messages.len() >= 4, "{}: transport messages too", v.name);
        run(v).unwrap();
    }
}

#[test]
fn a_changed_byte_breaks_the_vector() {
    // The comparison can fail: a changed prologue changes the first message's tags, and a
    // changed transport ciphertext is caught too.
    let mut v = parse().remove(0);
    v.fields.get_mut("prologue").unwrap()[0] ^= 1;
    assert_eq!(run(&v), Err("cacophony: first message".to_owned()));
    let mut v = parse().remove(0);
    v.messages[4].1[0] ^= 1;
    assert_eq!(run(&v), Err("cacophony: transport message 2".to_owned()));
}
