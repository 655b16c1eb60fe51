//! Aptos handshake v1, sans-IO: the [`HandshakeMsg`] both ends exchange once the remote's
//! identity is known, its BCS layout byte by byte, and the negotiation that decides whether
//! the connection may proceed (the original's `perform_handshake`). Nothing here does I/O;
//! `upgrade.rs` frames and sequences the exchange.
//!
//! # Wire layout
//!
//! The message is BCS, as the original derives it (`HandshakeMsg { supported_protocols:
//! BTreeMap<MessagingProtocolVersion, ProtocolIdSet>, chain_id: ChainId, network_id:
//! NetworkId }`), and travels behind a `u16` big-endian length (the original's
//! `write_u16frame`):
//!
//! | Field | Bytes |
//! |---|---|
//! | `supported_protocols` | map length (ULEB128), then per entry in key order: the version (ULEB128 variant index, `00` = V1) ‖ its [`ProtocolIdSet`] |
//! | [`ProtocolIdSet`] | the original's `BitVec`: ULEB128 length (at most 32) ‖ bytes; protocol `p` is bit `0x80 >> (p % 8)` of byte `p / 8` (most significant bit first), and the vector is as long as its highest set protocol needs |
//! | `chain_id` | one byte ([`ChainId`]) |
//! | `network_id` | the original's compatibility encoding of [`NetworkId`]: `00` Validator, `01` Public, `02 03 76 66 6e` Vfn (the old `Private("vfn")`); accepted on receipt also: `02` with any string (Vfn), `03` (Vfn), `04` (Public) |
//!
//! Example: V1 with `{HealthCheckerRpc (5)}`, chain 4, network Validator is `01 00 01 04 04 00`,
//! framed `00 06 01 00 01 04 04 00`.
//!
//! Decoding is strict, as BCS is: canonical ULEB128, keys in increasing order without
//! repeats, a known messaging version, valid UTF-8 in the network name, no trailing bytes.
//!
//! # Negotiation
//!
//! In the original's order: the chain ids must be equal ([`HandshakeError::InvalidChainId`]),
//! then the network ids ([`HandshakeError::InvalidNetworkId`]); then, from the highest
//! messaging version we support down, the first version both announce with a non-empty
//! intersection of protocols wins, and that intersection is the connection's protocol set.
//! None: [`HandshakeError::NoCommonProtocols`]. The health-check protocol counts like any
//! other, as in the original.

use std::fmt;

use super::error::HandshakeError;
use crate::proto::ProtocolId;

/// Longest handshake message accepted: the `u16` length prefix's limit.
pub(crate) const MAX_HANDSHAKE_LEN: usize = u16::MAX as usize;

/// The only messaging protocol version (Aptos `MessagingProtocolVersion::V1`, BCS `00`).
pub(crate) const MESSAGING_V1: u8 = 0;

/// A set of application protocols, as the handshake announces it (the original's
/// `ProtocolIdSet`, a bit vector of at most 256 bits).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ProtocolIdSet([u8; 32]);

impl ProtocolIdSet {
    /// The empty set.
    pub fn new() -> ProtocolIdSet {
        ProtocolIdSet::default()
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: ProtocolId) {
        self.0[usize::from(p.0 / 8)] |= 0x80 >> (p.0 % 8);
    }

    /// True if `p` is in the set.
    pub fn contains(&self, p: ProtocolId) -> bool {
        self.0[usize::from(p.0 / 8)] & (0x80 >> (p.0 % 8)) != 0
    }

    /// The protocols in both sets.
    pub fn intersection(&self, other: &ProtocolIdSet) -> ProtocolIdSet {
        let mut out = ProtocolIdSet::default();
        for (o, (a, b)) in out.0.iter_mut().zip(self.0.iter().zip(&other.0)) {
            *o = a & b;
        }
        out
    }

    /// True if the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// How many protocols the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|b| b.count_ones() as usize).sum()
    }

    /// The protocols in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ProtocolId> + '_ {
        (0..=u8::MAX).map(ProtocolId).filter(|p| self.contains(*p))
    }

    /// The bit vector as the original serializes it: up to the last non-zero byte.
    fn bitvec(&self) -> &[u8] {
        let len = self.0.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        &self.0[..len]
    }
}

impl FromIterator<ProtocolId> for ProtocolIdSet {
    fn from_iter<I: IntoIterator<Item = ProtocolId>>(iter: I) -> ProtocolIdSet {
        let mut set = ProtocolIdSet::default();
        iter.into_iter().for_each(|p| set.insert(p));
        set
    }
}

impl fmt::Debug for ProtocolIdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|p| p.0)).finish()
    }
}

/// Which chain a node belongs to (the original's `ChainId`, one byte on the wire). Both ends
/// of a connection must agree. Default 4, the original's `TESTING` chain (`ChainId::test()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainId(pub u8);

impl Default for ChainId {
    fn default() -> ChainId {
        ChainId(4)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chain {}", self.0)
    }
}

/// Which of a node's networks a connection belongs to (the original's `NetworkId`). Both ends
/// must agree. Default `Public`, as the original's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkId {
    /// The validators' network.
    Validator,
    /// The network between a validator and its full nodes.
    Vfn,
    /// The public full-node network.
    #[default]
    Public,
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkId::Validator => "validator network",
            NetworkId::Vfn => "vfn network",
            NetworkId::Public => "public network",
        })
    }
}

/// One side's handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HandshakeMsg {
    /// `(messaging version, protocols)` in increasing version order, no repeats.
    pub(crate) supported: Vec<(u8, ProtocolIdSet)>,
    pub(crate) chain_id: ChainId,
    pub(crate) network_id: NetworkId,
}

/// What a successful negotiation settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) version: u8,
    pub(crate) protocols: ProtocolIdSet,
}

impl HandshakeMsg {
    /// Our message: messaging V1 with `protocols`.
    pub(crate) fn v1(
        protocols: ProtocolIdSet,
        chain_id: ChainId,
        network_id: NetworkId,
    ) -> HandshakeMsg {
        HandshakeMsg {
            supported: vec![(MESSAGING_V1, protocols)],
            chain_id,
            network_id,
        }
    }

    /// The BCS bytes (without the length prefix).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        put_uleb(&mut out, self.supported.len() as u32);
        for (version, set) in &self.supported {
            put_uleb(&mut out, u32::from(*version));
            let bits = set.bitvec();
            put_uleb(&mut out, bits.len() as u32);
            out.extend_from_slice(bits);
        }
        out.push(self.chain_id.0);
        match self.network_id {
            NetworkId::Validator => out.push(0),
            NetworkId::Public => out.push(1),
            NetworkId::Vfn => out.extend_from_slice(b"\x02\x03vfn"),
        }
        out
    }

    /// Parses one whole message, strictly.
    pub(crate) fn decode(bytes: &[u8]) -> Result<HandshakeMsg, HandshakeError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let msg = r.message().map_err(|reason| HandshakeError::Malformed {
            reason,
            at: r.pos,
            prefix: bytes[..bytes.len().min(16)].to_vec(),
        })?;
        Ok(msg)
    }

    /// The original's `perform_handshake`, `self` being ours.
    pub(crate) fn negotiate(&self, theirs: &HandshakeMsg) -> Result<Negotiated, HandshakeError> {
        if self.chain_id != theirs.chain_id {
            return Err(HandshakeError::InvalidChainId {
                theirs: theirs.chain_id,
                ours: self.chain_id,
            });
        }
        if self.network_id != theirs.network_id {
            return Err(HandshakeError::InvalidNetworkId {
                theirs: theirs.network_id,
                ours: self.network_id,
            });
        }
        for (version, ours) in self.supported.iter().rev() {
            if let Some((_, their_set)) = theirs.supported.iter().find(|(v, _)| v == version) {
                let common = ours.intersection(their_set);
                if !common.is_empty() {
                    return Ok(Negotiated {
                        version: *version,
                        protocols: common,
                    });
                }
            }
        }
        Err(HandshakeError::NoCommonProtocols)
    }
}

fn put_uleb(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A BCS cursor over one message; `pos` is where a failure was found.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let b = *self.buf.get(self.pos).ok_or("message ends early")?;
        self.pos += 1;
        Ok(b)
    }

    /// Canonical ULEB128 within `u32`, as BCS requires.
    fn uleb(&mut self) -> Result<u32, &'static str> {
        let mut value: u64 = 0;
        for shift in (0..35).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift > 0 && b == 0 {
                    return Err("non-canonical uleb128");
                }
                return u32::try_from(value).map_err(|_| "uleb128 over u32");
            }
        }
        Err("uleb128 over u32")
    }

    fn bytes(&mut self, max: usize) -> Result<&[u8], &'static str> {
        let len = self.uleb()? as usize;
        if len > max {
            return Err("field too long");
        }
        let end = self.pos.checked_add(len).ok_or("message ends early")?;
        let out = self.buf.get(self.pos..end).ok_or("message ends early")?;
        self.pos = end;
        Ok(out)
    }

    fn message(&mut self) -> Result<HandshakeMsg, &'static str> {
        let entries = self.uleb()?;
        let mut supported: Vec<(u8, ProtocolIdSet)> = Vec::new();
        for _ in 0..entries {
            let version = self.uleb()?;
            if version != u32::from(MESSAGING_V1) {
                // The original's enum has V1 only: BCS refuses any other variant.
                return Err("unknown messaging protocol version");
            }
            if supported
                .last()
                .is_some_and(|(v, _)| u32::from(*v) >= version)
            {
                return Err("map keys not in increasing order");
            }
            let bits = self.bytes(32).map_err(|e| match e {
                "field too long" => "protocol set longer than 32 bytes",
                e => e,
            })?;
            let mut set = ProtocolIdSet::default();
            set.0[..bits.len()].copy_from_slice(bits);
            supported.push((version as u8, set));
        }
        let chain_id = ChainId(self.byte()?);
        let network_id = match self.uleb()? {
            0 => NetworkId::Validator,
            1 | 4 => NetworkId::Public,
            2 => {
                std::str::from_utf8(self.bytes(MAX_HANDSHAKE_LEN)?)
                    .map_err(|_| "network name is not utf-8")?;
                NetworkId::Vfn
            }
            3 => NetworkId::Vfn,
            _ => return Err("unknown network id"),
        };
        if self.pos != self.buf.len() {
            return Err("trailing bytes");
        }
        Ok(HandshakeMsg {
            supported,
            chain_id,
            network_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[u8]) -> ProtocolIdSet {
        ps.iter().map(|p| ProtocolId(*p)).collect()
    }

    fn msg(ps: &[u8], chain: u8, network: NetworkId) -> HandshakeMsg {
        HandshakeMsg::v1(set(ps), ChainId(chain), network)
    }

    /// The original's `BitVec` tests: `[0b0000_0001, 0b0100_0000]` holds 7 and 9; setting 10
    /// gives `[0b0000_0001, 0b0110_0000]`; `[0b1000_0000]` holds 0; 255 is the last bit of
    /// byte 31.
    #[test]
    fn protocol_set_bit_order_is_the_originals() {
        let s = set(&[7, 9]);
        assert_eq!(s.bitvec(), [0b0000_0001, 0b0100_0000]);
        let s = set(&[7, 9, 10]);
        assert_eq!(s.bitvec(), [0b0000_0001, 0b0110_0000]);
        assert_eq!(set(&[0]).bitvec(), [0b1000_0000]);
        let top = set(&[0, 255]);
        assert_eq!(top.bitvec().len(), 32);
        assert_eq!(top.bitvec()[31], 0b0000_0001);
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), [0, 255]);
        assert_eq!(top.len(), 2);
        assert!(set(&[]).bitvec().is_empty());
        assert_eq!(format!("{:?}", set(&[5, 1])), "{1, 5}");
    }

    #[test]
    fn layout_byte_by_byte() {
        // The original's `new_for_testing`: V1 {HealthCheckerRpc}, chain TESTING (4).
        assert_eq!(
            msg(&[5], 4, NetworkId::Validator).encode(),
            [0x01, 0x00, 0x01, 0x04, 0x04, 0x00]
        );
        // `simple_handshake`'s client: {ConsensusRpcBcs (0), ConsensusDirectSendBcs (1)}.
        assert_eq!(
            msg(&[0, 1], 4, NetworkId::Public).encode(),
            [0x01, 0x00, 0x01, 0xc0, 0x04, 0x01]
        );
        // Vfn goes out as the old `Private("vfn")`.
        assert_eq!(
            msg(&[9, 28], 1, NetworkId::Vfn).encode(),
            [
                0x01, 0x00, 0x04, 0x00, 0x40, 0x00, 0x08, 0x01, 0x02, 0x03, b'v', b'f', b'n'
            ]
        );
        // No version at all: an empty map.
        let none = HandshakeMsg {
            supported: vec![],
            chain_id: ChainId(2),
            network_id: NetworkId::Validator,
        };
        assert_eq!(none.encode(), [0x00, 0x02, 0x00]);
    }

    #[test]
    fn decodes_what_it_encodes_and_the_legacy_network_ids() {
        for m in [
            msg(&[5], 4, NetworkId::Validator),
            msg(&[0, 1, 2, 200], 1, NetworkId::Public),
            msg(&[3], 127, NetworkId::Vfn),
        ] {
            assert_eq!(HandshakeMsg::decode(&m.encode()).unwrap(), m);
        }
        let base = [0x01, 0x00, 0x01, 0x04, 0x04];
        for (tail, network) in [
            (&[0x03][..], NetworkId::Vfn),
            (&[0x04][..], NetworkId::Public),
            (&b"\x02\x05other"[..], NetworkId::Vfn),
            (&[0x02, 0x00][..], NetworkId::Vfn),
        ] {
            let bytes = [&base[..], tail].concat();
            assert_eq!(
                HandshakeMsg::decode(&bytes).unwrap().network_id,
                network,
                "{tail:02x?}"
            );
        }
        // A longer bit vector than needed (an intersection keeps its length) is fine.
        let padded = [0x01, 0x00, 0x03, 0x04, 0x00, 0x00, 0x04, 0x00];
        assert_eq!(
            HandshakeMsg::decode(&padded).unwrap(),
            msg(&[5], 4, NetworkId::Validator)
        );
    }

    #[test]
    fn refuses_malformed_messages() {
        let mut too_long = vec![0x01, 0x00, 33];
        too_long.extend([0u8; 33]);
        too_long.extend([0x04, 0x00]);
        let mut max_len = vec![0x01, 0x00, 32];
        max_len.extend([0u8; 32]);
        max_len.extend([0x04, 0x00]);
        assert!(HandshakeMsg::decode(&max_len).is_ok());
        let cases: [(&[u8], &str); 9] = [
            (&[], "message ends early"),
            (&[0x01, 0x01, 0x01, 0x04, 0x04, 0x00], "unknown messaging"),
            (
                &[0x02, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00],
                "increasing order",
            ),
            (&too_long, "longer than 32"),
            (&[0x01, 0x00, 0x01, 0x04, 0x04, 0x05], "unknown network id"),
            (&[0x01, 0x00, 0x01, 0x04, 0x04, 0x00, 0x00], "trailing"),
            (&[0x81, 0x00, 0x00, 0x01, 0x04, 0x04, 0x00], "non-canonical"),
            (&[0x01, 0x00, 0x01, 0x04, 0x04, 0x02, 0x01, 0xff], "utf-8"),
            (&[0x01, 0x00, 0x05, 0x04], "ends early"),
        ];
        for (bytes, want) in cases {
            match HandshakeMsg::decode(bytes) {
                Err(HandshakeError::Malformed { reason, .. }) => {
                    assert!(reason.contains(want), "{bytes:02x?}: {reason}")
                }
                other => panic!("{bytes:02x?}: {other:?}"),
            }
        }
        let e = HandshakeMsg::decode(b"HTTP/1.1 200 OK\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed handshake message (unknown messaging protocol version after 2 bytes): \
             48 54 54 50 2f 31 2e 31 20 32 30 30 20 4f 4b 0d"
        );
    }

    /// The original's `common_protocols`, `represents_same_network` and
    /// `ignore_unknown_protocols` tests.
    #[test]
    fn negotiates_as_the_original() {
        let v = NetworkId::Public;
        let h1 = msg(&[0, 4], 4, v);
        let got = h1.negotiate(&msg(&[0, 2], 4, v)).unwrap();
        assert_eq!(got.version, MESSAGING_V1);
        assert_eq!(got.protocols, set(&[0]));
        let no_version = HandshakeMsg {
            supported: vec![],
            ..msg(&[], 4, v)
        };
        assert!(matches!(
            h1.negotiate(&no_version),
            Err(HandshakeError::NoCommonProtocols)
        ));
        assert!(matches!(
            h1.negotiate(&msg(&[], 4, v)),
            Err(HandshakeError::NoCommonProtocols)
        ));
        let known = msg(&[2, 3], 4, v);
        let some_unknown = msg(&[2, 66, 234], 4, v);
        assert_eq!(known.negotiate(&some_unknown).unwrap().protocols, set(&[2]));
        assert!(matches!(
            known.negotiate(&msg(&[42, 99, 123], 4, v)),
            Err(HandshakeError::NoCommonProtocols)
        ));
        let vfn = msg(&[5], 4, NetworkId::Vfn);
        assert!(vfn.negotiate(&vfn.clone()).is_ok());
        match vfn.negotiate(&msg(&[5], 4, NetworkId::Public)) {
            Err(HandshakeError::InvalidNetworkId { theirs, ours }) => {
                assert_eq!((theirs, ours), (NetworkId::Public, NetworkId::Vfn))
            }
            other => panic!("{other:?}"),
        }
        // The chain is checked first.
        match vfn.negotiate(&msg(&[5], 5, NetworkId::Public)) {
            Err(e @ HandshakeError::InvalidChainId { .. }) => assert_eq!(
                e.to_string(),
                "the remote is on chain 5, this node on chain 4"
            ),
            other => panic!("{other:?}"),
        }
    }
}
