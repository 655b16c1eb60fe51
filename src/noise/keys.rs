//! x25519 keys: a node's static key pair ([`StaticKeypair`]), a remote's [`PublicKey`], and
//! the `PeerId` that Aptos derives from a public key.
//!
//! Keys are plain 32-byte values as x25519 (RFC 7748) defines them: a private key is used
//! clamped, a public key is a Montgomery u-coordinate. Nothing here checks a public key for
//! low order, as neither Aptos nor snow does.
//!
//! The derived peer id follows Aptos's `account_address::from_identity_public_key`
//! (`types/src/account_address.rs`): the last `AccountAddress::LENGTH` bytes of the key, and
//! as an Aptos address is 32 bytes long, that is the whole key. Validators use their account
//! address as their peer id instead, which is why a [`NoiseConfig`](super::NoiseConfig) takes
//! the node's peer id separately from its key.

use std::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;

use super::error::CryptoError;
use super::ik;
use crate::PeerId;

/// Bytes in an x25519 public or private key.
pub const KEY_LEN: usize = 32;

/// An x25519 public key: a remote's static key, or our own.
///
/// `Display` shows the first 4 bytes in hex (as a short peer id does), `Debug` all 32.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key with these bytes (any 32 bytes are accepted, as in Aptos).
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }

    /// The key's bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The peer id Aptos derives from this key (`from_identity_public_key`): the key's 32
    /// bytes themselves. A maybe-mutual responder accepts an unknown client only if the peer
    /// id it announces is this one.
    pub const fn derived_peer_id(&self) -> PeerId {
        PeerId(self.0)
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> PublicKey {
        PublicKey(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..4].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

/// A node's static x25519 key pair, the identity it proves in every Noise handshake.
///
/// `Debug` shows the public key only.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; KEY_LEN],
    public: PublicKey,
}

impl StaticKeypair {
    /// A fresh key pair from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`CryptoError`] if the random source fails.
    pub fn generate() -> Result<StaticKeypair, CryptoError> {
        let pair = ik::generate_keypair()?;
        Ok(StaticKeypair::from_private_bytes(pair))
    }

    /// The key pair of a stored private key (32 bytes, used clamped as x25519 does).
    pub fn from_private_bytes(private: [u8; KEY_LEN]) -> StaticKeypair {
        let public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        StaticKeypair {
            private,
            public: PublicKey(public),
        }
    }

    /// The public half, which remotes use to dial this node and to trust it.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The private key's bytes, to store it. Secret: never log them.
    pub fn private_bytes(&self) -> &[u8; KEY_LEN] {
        &self.private
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rfc7748_public_keys() {
        // RFC 7748 section 6.1: Alice's and Bob's key pairs.
        let alice = StaticKeypair::from_private_bytes(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            alice.public_key().as_bytes(),
            &hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let bob = StaticKeypair::from_private_bytes(hex32(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            bob.public_key().as_bytes(),
            &hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
    }

    #[test]
    fn derived_peer_id_is_the_whole_key() {
        let key = PublicKey::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(key.derived_peer_id().0, *key.as_bytes());
    }

    #[test]
    fn generated_keys_differ_and_match_their_public_half() {
        let a = StaticKeypair::generate().unwrap();
        let b = StaticKeypair::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let again = StaticKeypair::from_private_bytes(*a.private_bytes());
        assert_eq!(again.public_key(), a.public_key());
    }

    #[test]
    fn debug_hides_the_private_key() {
        let pair = StaticKeypair::from_private_bytes([0xab; 32]);
        let shown = format!("{pair:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains("PublicKey("));
        assert_eq!(format!("{}", PublicKey::from_bytes([0x12; 32])), "12121212");
    }
}
