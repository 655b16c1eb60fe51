//! Authenticated, encrypted connections: Noise IK (`Noise_IK_25519_AESGCM_SHA256`) as the Aptos
//! network runs it, sans-IO.
//!
//! Nothing here does I/O, spawns a thread or reads a clock: the dialer passes the wall-clock
//! time for its anti-replay timestamp (`now: SystemTime`), bytes go in and out as slices. The
//! only system resource used is the random source, for ephemeral keys.
//!
//! # Use
//!
//! 1. Each node has a [`NoiseConfig`]: its [`StaticKeypair`], the [`PeerId`](crate::PeerId) it
//!    announces, an [`AuthMode`] and its [`TrustedPeers`] (shared, updatable while running).
//! 2. The dialer, on its own thread before the connection's threads start: [`Initiator::new`],
//!    send [`first_message`](Initiator::first_message), read the 48-byte answer into
//!    [`Initiator::read`], [`Initiator::finish`]. The listener, from its poll loop: feed
//!    [`Responder::read`] until [`remaining`](Responder::remaining) is 0,
//!    [`Responder::accept`], send [`Accepted::response`].
//! 3. [`NoiseSession::split`] gives a [`NoiseWriter`] for the writer thread and a
//!    [`NoiseReader`] for the reader thread; the Aptos handshake and messaging v1 then run
//!    inside, unchanged.
//!
//! Plain TCP remains possible, named as what it is: [`ConnectionSecurity::InsecurePlaintext`].
//!
//! # Wire format
//!
//! Everything below is as Aptos sends it (`network/framework/src/noise/handshake.rs` and
//! `stream.rs`, `crates/aptos-crypto/src/noise.rs`). The handshake messages have fixed lengths
//! and no length prefix.
//!
//! **Client → server, 168 bytes**, sent as soon as the connection is up:
//!
//! ```text
//! offset len  field
//!      0  32  the client's peer id                       ┐ prologue, in clear, and mixed
//!     32  32  the server's x25519 public key, as dialed  ┘ into the handshake hash
//!     64  32  e: the client's ephemeral public key
//!     96  48  s: the client's static public key, AES-256-GCM encrypted (32 + 16-byte tag)
//!    144  24  payload: 8-byte timestamp, encrypted (8 + 16-byte tag); the timestamp is the
//!             client's wall clock in milliseconds since the Unix epoch, u64 little-endian
//! ```
//!
//! **Server → client, 48 bytes**, once the checks pass (see [`Responder::accept`]):
//!
//! ```text
//!      0  32  e: the server's ephemeral public key
//!     32  16  the tag of the empty payload
//! ```
//!
//! The Noise parameters are the standard ones: the handshake hash and chaining key start as
//! the protocol name padded with zeros to 32 bytes, the pre-message is the server's static key,
//! HKDF is HMAC-SHA-256, and the handshake ends with the usual split, the first key for
//! client → server, the second for server → client. The keys, nonces and AES-GCM of the
//! handshake are snow's.
//!
//! **Transport**, in both directions after the handshake, a stream of messages:
//!
//! ```text
//!      0   2  length n of what follows, u16 big-endian, 16 ≤ n ≤ 65,535 (0 is refused,
//!             as Aptos's reader treats it as a broken stream)
//!      2 n-16 ciphertext of n − 16 plaintext bytes
//!   n-14  16  AES-GCM tag (no associated data)
//! ```
//!
//! The k-th message of a direction (from 0) is encrypted under that direction's key with
//! the 12-byte nonce `00 00 00 00` ‖ k as u64 big-endian. The plaintext of the messages,
//! concatenated, is the byte stream the layers above speak; a message boundary need not fall on
//! a frame boundary (a writer packs up to 65,519 plaintext bytes into each). Example: the first
//! message carrying `hello` is `00 15` then 5 bytes of ciphertext and 16 of tag.
//!
//! # Crates
//!
//! snow runs the handshake; the transport halves run AES-256-GCM from the `aes-gcm` crate with
//! the keys of snow's raw split, because snow's transport states cannot be owned by two
//! threads at once without re-expanding the key for every message (see `transport.rs`).
//! Both use RustCrypto's pure-Rust primitives; `aes` and `polyval` use AES-NI and CLMUL when
//! the processor has them, detected at run time.

mod config;
mod error;
mod handshake;
mod ik;
mod keys;
mod outgoing;
mod reader;
mod transport;
mod trust;
#[cfg(test)]
mod vectors;
mod writer;

pub use config::{ConnectionSecurity, NoiseConfig, NoiseStats};
pub use error::{CryptoError, HandshakeError, HandshakeErrorKind, ReadError, WriteError};
pub use handshake::{
    Accepted, CLIENT_MESSAGE_LEN, CLIENT_NOISE_LEN, Initiator, PROLOGUE_LEN, Responder,
    SERVER_MESSAGE_LEN, TIMESTAMP_LEN, prologue, timestamp_payload, unix_millis,
};
pub use ik::PROTOCOL_NAME;
pub use keys::{KEY_LEN, PublicKey, StaticKeypair};
pub(crate) use outgoing::Outgoing;
pub use reader::NoiseReader;
pub use transport::{
    LENGTH_PREFIX_LEN, MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN, NoiseSession, TAG_LEN, encrypted_len,
};
pub use trust::{AntiReplayTimestamps, AuthMode, Trust, TrustedPeers};
pub use writer::NoiseWriter;

/// Constructors for the fuzz targets only (feature `fuzzing`): a writer and a reader keyed
/// directly, without a handshake, so a target can seal valid messages and then alter them.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::{NoiseReader, NoiseWriter};

    /// A writer and a reader sharing `key`, both at nonce 0.
    pub fn transport_pair(key: &[u8; 32]) -> (NoiseWriter, NoiseReader) {
        let reader = NoiseReader::new(key, crate::PeerId::default(), Arc::default());
        (NoiseWriter::new(key), reader)
    }
}
