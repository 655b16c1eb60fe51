//! A node's Noise configuration ([`NoiseConfig`]: its key, its peer id, the auth mode, the
//! trusted set and the anti-replay table), the counters of handshake and transport outcomes
//! ([`NoiseStats`]), and [`ConnectionSecurity`], which names plaintext TCP as the opt-in it is.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::error::{HandshakeError, HandshakeErrorKind, ReadError};
use super::keys::{PublicKey, StaticKeypair};
use super::trust::{AntiReplayTimestamps, AuthMode, TrustedPeers};
use crate::PeerId;

/// Whether connections run inside Noise. There is no default: plaintext must be chosen by
/// name.
#[derive(Clone, Debug)]
pub enum ConnectionSecurity {
    /// Every connection is a Noise IK session, authenticated and encrypted, as in Aptos.
    Noise(NoiseConfig),
    /// Plain TCP: no authentication (a peer id is whatever the remote claims) and no
    /// encryption. For tests, and for networks that are trusted or tunnelled already.
    InsecurePlaintext,
}

/// A node's Noise identity and policy, shared by all its handshakes.
///
/// Cheap to clone: clones share the trusted set, the anti-replay table and the counters. The
/// dialer's thread and the listener each hold a clone.
#[derive(Clone)]
pub struct NoiseConfig {
    inner: Arc<Inner>,
}

struct Inner {
    keypair: StaticKeypair,
    peer_id: PeerId,
    mode: AuthMode,
    trusted: TrustedPeers,
    anti_replay: AntiReplayTimestamps,
    counters: Arc<Counters>,
}

impl NoiseConfig {
    /// A configuration for the node `peer_id` holding `keypair`. `peer_id` is what the node
    /// announces when it dials: a validator's account address, or for other nodes
    /// `keypair.public_key().derived_peer_id()`.
    pub fn new(
        keypair: StaticKeypair,
        peer_id: PeerId,
        mode: AuthMode,
        trusted: TrustedPeers,
    ) -> NoiseConfig {
        NoiseConfig {
            inner: Arc::new(Inner {
                keypair,
                peer_id,
                mode,
                trusted,
                anti_replay: AntiReplayTimestamps::new(),
                counters: Arc::default(),
            }),
        }
    }

    /// The node's static key pair.
    pub fn keypair(&self) -> &StaticKeypair {
        &self.inner.keypair
    }

    /// The node's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.keypair.public_key()
    }

    /// The peer id the node announces when it dials.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// How inbound clients are authenticated.
    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// The trusted set; updating it (through this or any clone) affects the next handshakes.
    pub fn trusted_peers(&self) -> &TrustedPeers {
        &self.inner.trusted
    }

    /// The anti-replay table (used in mutual mode).
    pub fn anti_replay(&self) -> &AntiReplayTimestamps {
        &self.inner.anti_replay
    }

    /// A snapshot of the counters, summed over every handshake and transport made from this
    /// configuration or its clones.
    pub fn stats(&self) -> NoiseStats {
        self.inner.counters.snapshot()
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.inner.counters
    }

    /// Counts and logs a failed handshake, and hands the error back.
    pub(crate) fn refuse(&self, error: HandshakeError, inbound: bool) -> HandshakeError {
        let n = self.inner.counters.handshake[error.kind().index()].fetch_add(1, Relaxed) + 1;
        // Thinned to powers of two per kind, without a clock: a flood of bad handshakes
        // costs a log line per doubling.
        if n.is_power_of_two() {
            if inbound {
                log::warn!("noise: refused inbound handshake: {error} ({n} of this kind)");
            } else {
                log::warn!("noise: outbound handshake failed: {error} ({n} of this kind)");
            }
        }
        error
    }
}

impl fmt::Debug for NoiseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoiseConfig")
            .field("public_key", &self.public_key())
            .field("peer_id", &self.inner.peer_id)
            .field("mode", &self.inner.mode)
            .field("trusted_peers", &self.inner.trusted.len())
            .finish_non_exhaustive()
    }
}

/// The shared counters behind [`NoiseStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) outbound_completed: AtomicU64,
    pub(crate) inbound_accepted: AtomicU64,
    handshake: [AtomicU64; HandshakeErrorKind::ALL.len()],
    read: [AtomicU64; ReadError::KINDS],
}

impl Counters {
    /// Counts a transport read error; true the first time of its kind, and at every doubling
    /// (when it is worth a log line).
    pub(crate) fn read_failed(&self, error: ReadError) -> bool {
        let n = self.read[error.index()].fetch_add(1, Relaxed) + 1;
        n.is_power_of_two()
    }

    pub(crate) fn snapshot(&self) -> NoiseStats {
        let read = |e: ReadError| self.read[e.index()].load(Relaxed);
        NoiseStats {
            outbound_completed: self.outbound_completed.load(Relaxed),
            inbound_accepted: self.inbound_accepted.load(Relaxed),
            handshake_failures: std::array::from_fn(|i| self.handshake[i].load(Relaxed)),
            empty_messages: read(ReadError::EmptyMessage),
            short_messages: read(ReadError::MessageTooShort { len: 0 }),
            decrypt_failures: read(ReadError::Decrypt { message: 0 }),
            truncated_messages: read(ReadError::Truncated {
                received: 0,
                expected: 0,
            }),
            receive_nonces_exhausted: read(ReadError::NonceExhausted),
        }
    }
}

/// Counts of handshake and transport outcomes (see [`NoiseConfig::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoiseStats {
    /// Handshakes this node dialed that completed.
    pub outbound_completed: u64,
    /// Handshakes this node answered and accepted.
    pub inbound_accepted: u64,
    handshake_failures: [u64; HandshakeErrorKind::ALL.len()],
    /// Transport messages refused for a length prefix of 0.
    pub empty_messages: u64,
    /// Transport messages refused for being shorter than their tag.
    pub short_messages: u64,
    /// Transport messages that failed authentication (tampered or out of order).
    pub decrypt_failures: u64,
    /// Streams that ended inside a transport message.
    pub truncated_messages: u64,
    /// Readers that ran out of nonces.
    pub receive_nonces_exhausted: u64,
}

impl NoiseStats {
    /// Handshakes that failed with an error of `kind`, either side.
    pub fn handshake_failures(&self, kind: HandshakeErrorKind) -> u64 {
        self.handshake_failures[kind.index()]
    }

    /// Handshakes that failed, all kinds together.
    pub fn handshake_failures_total(&self) -> u64 {
        self.handshake_failures.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_kind_and_shared_by_clones() {
        let config = NoiseConfig::new(
            StaticKeypair::from_private_bytes([1; 32]),
            PeerId::from_u64(1),
            AuthMode::Mutual,
            TrustedPeers::new(),
        );
        let clone = config.clone();
        for _ in 0..3 {
            let e = clone.refuse(HandshakeError::SelfDial, true);
            assert!(matches!(e, HandshakeError::SelfDial));
        }
        config.refuse(HandshakeError::ServerMessageRejected, false);
        let stats = config.stats();
        assert_eq!(stats.handshake_failures(HandshakeErrorKind::SelfDial), 3);
        assert_eq!(
            stats.handshake_failures(HandshakeErrorKind::ServerMessageRejected),
            1
        );
        assert_eq!(stats.handshake_failures(HandshakeErrorKind::Replay), 0);
        assert_eq!(stats.handshake_failures_total(), 4);
    }

    #[test]
    fn read_failures_log_at_powers_of_two() {
        let c = Counters::default();
        let logged: Vec<bool> = (0..5)
            .map(|_| c.read_failed(ReadError::EmptyMessage))
            .collect();
        assert_eq!(logged, [true, true, false, true, false]);
        assert_eq!(c.snapshot().empty_messages, 5);
        assert_eq!(c.snapshot().decrypt_failures, 0);
    }

    #[test]
    fn debug_shows_no_private_key() {
        let config = NoiseConfig::new(
            StaticKeypair::from_private_bytes([0xcd; 32]),
            PeerId::from_u64(1),
            AuthMode::MaybeMutual,
            TrustedPeers::new(),
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("cdcd"), "{shown}");
        assert!(shown.contains("MaybeMutual"));
    }
}
