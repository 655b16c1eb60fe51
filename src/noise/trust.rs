//! Who may connect: the authentication mode ([`AuthMode`]), the set of trusted peers and their
//! keys ([`TrustedPeers`], shared and updatable while the node runs), and the anti-replay
//! timestamps a mutual-auth responder keeps per client key ([`AntiReplayTimestamps`]).
//!
//! The rules are Aptos's (`network/framework/src/noise/handshake.rs`):
//!
//! * **Mutual**: the client's peer id must be in the trusted set, and the key it proves must be
//!   one of that peer's keys. The client's payload must be an 8-byte timestamp (little-endian
//!   milliseconds since the Unix epoch), strictly greater than the last one accepted for the
//!   same key; it is then stored.
//! * **MaybeMutual**: a client in the trusted set is checked as above and marked
//!   [`Trust::Trusted`]; any other client is let in as [`Trust::Untrusted`] provided that the
//!   peer id it announces is the one derived from its key. The timestamp is not checked.
//!
//! Timestamps are kept only in mutual mode, where the trusted set bounds how many keys there
//! are (as in Aptos).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::keys::PublicKey;
use crate::PeerId;

/// How a responder authenticates its clients (Aptos `HandshakeAuthMode`). The dialer always
/// authenticates the responder: it must know the responder's key to dial it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Only trusted peers with a trusted key get in, with anti-replay timestamps (a validator
    /// network).
    Mutual,
    /// Anyone gets in; trusted peers are checked and marked trusted (a public network).
    MaybeMutual,
}

/// How a finished handshake classifies the remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The remote's peer id is in the trusted set (and, on the responder, with the key it
    /// proved).
    Trusted,
    /// The remote is not in the trusted set (maybe-mutual responders, and dialers that dial
    /// a peer they do not list).
    Untrusted,
}

/// What the trusted set says about a peer id and key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The peer id is not in the set.
    UnknownPeer,
    /// The peer id is in the set, but not with this key.
    UntrustedKey,
    /// The peer id is in the set with this key.
    Trusted,
}

/// The trusted peers and their static keys, keyed by [`PeerId`]. A peer may have several keys
/// (a key rotation in progress).
///
/// Cheap to clone: clones share one set, so the node's owner can update it while handshakes
/// read it (the listener's thread, dialing threads). A handshake reads it once, after the
/// client's message has been decrypted.
#[derive(Clone, Debug, Default)]
pub struct TrustedPeers {
    inner: Arc<RwLock<HashMap<PeerId, HashSet<PublicKey>>>>,
}

impl TrustedPeers {
    /// An empty set.
    pub fn new() -> TrustedPeers {
        TrustedPeers::default()
    }

    /// Trusts `peer` with exactly `keys`, replacing the keys it had. Returns true if the peer
    /// was already in the set.
    pub fn insert(&self, peer: PeerId, keys: impl IntoIterator<Item = PublicKey>) -> bool {
        self.inner
            .write()
            .insert(peer, keys.into_iter().collect())
            .is_some()
    }

    /// Stops trusting `peer`. Returns true if it was in the set. Connections already
    /// established stay up; closing them is the caller's decision.
    pub fn remove(&self, peer: &PeerId) -> bool {
        self.inner.write().remove(peer).is_some()
    }

    /// Replaces the whole set at once (as Aptos does when the validator set changes), so a
    /// handshake sees either the old set or the new one, never a mixture.
    pub fn replace_all<K>(&self, peers: impl IntoIterator<Item = (PeerId, K)>)
    where
        K: IntoIterator<Item = PublicKey>,
    {
        let new: HashMap<_, _> = peers
            .into_iter()
            .map(|(peer, keys)| (peer, keys.into_iter().collect()))
            .collect();
        *self.inner.write() = new;
    }

    /// True if `peer` is in the set.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.inner.read().contains_key(peer)
    }

    /// The keys trusted for `peer`, if it is in the set (in no particular order).
    pub fn keys(&self, peer: &PeerId) -> Option<Vec<PublicKey>> {
        self.inner
            .read()
            .get(peer)
            .map(|keys| keys.iter().copied().collect())
    }

    /// Peers in the set.
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    /// True if no peer is trusted.
    pub fn is_empty(&self) -> bool {
        self.inner.read().is_empty()
    }

    pub(crate) fn lookup(&self, peer: &PeerId, key: &PublicKey) -> Lookup {
        match self.inner.read().get(peer) {
            None => Lookup::UnknownPeer,
            Some(keys) if keys.contains(key) => Lookup::Trusted,
            Some(_) => Lookup::UntrustedKey,
        }
    }
}

impl<K> FromIterator<(PeerId, K)> for TrustedPeers
where
    K: IntoIterator<Item = PublicKey>,
{
    fn from_iter<I: IntoIterator<Item = (PeerId, K)>>(iter: I) -> TrustedPeers {
        let set = TrustedPeers::new();
        set.replace_all(iter);
        set
    }
}

/// The last handshake timestamp accepted per client key, in milliseconds since the Unix
/// epoch (Aptos `AntiReplayTimestamps`). Shared by every handshake a node answers; cheap to
/// clone (clones share the table).
#[derive(Clone, Debug, Default)]
pub struct AntiReplayTimestamps {
    inner: Arc<Mutex<HashMap<PublicKey, u64>>>,
}

impl AntiReplayTimestamps {
    /// An empty table.
    pub fn new() -> AntiReplayTimestamps {
        AntiReplayTimestamps::default()
    }

    /// Accepts `timestamp` for `key` if it is strictly greater than the last one accepted (or
    /// the first), and stores it; both in one step, so two handshakes racing with the same
    /// timestamp cannot both pass.
    ///
    /// # Errors
    ///
    /// The last accepted timestamp, if `timestamp` is not greater: a replay.
    pub fn check_and_store(&self, key: PublicKey, timestamp: u64) -> Result<(), u64> {
        match self.inner.lock().entry(key) {
            Entry::Occupied(mut last) => {
                if timestamp <= *last.get() {
                    return Err(*last.get());
                }
                last.insert(timestamp);
            }
            Entry::Vacant(slot) => {
                slot.insert(timestamp);
            }
        }
        Ok(())
    }

    /// The last timestamp accepted for `key`.
    pub fn last(&self, key: &PublicKey) -> Option<u64> {
        self.inner.lock().get(key).copied()
    }

    /// Keys with a stored timestamp.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True if no timestamp is stored.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn lookup_distinguishes_unknown_peer_and_untrusted_key() {
        let set = TrustedPeers::new();
        let a = PeerId::from_u64(1);
        assert!(!set.insert(a, [key(1), key(2)]));
        assert_eq!(set.lookup(&a, &key(1)), Lookup::Trusted);
        assert_eq!(set.lookup(&a, &key(2)), Lookup::Trusted);
        assert_eq!(set.lookup(&a, &key(3)), Lookup::UntrustedKey);
        assert_eq!(
            set.lookup(&PeerId::from_u64(2), &key(1)),
            Lookup::UnknownPeer
        );
        // Insert replaces the keys.
        assert!(set.insert(a, [key(3)]));
        assert_eq!(set.lookup(&a, &key(1)), Lookup::UntrustedKey);
        assert!(set.remove(&a));
        assert!(!set.remove(&a));
        assert!(set.is_empty());
    }

    #[test]
    fn clones_share_updates() {
        let set = TrustedPeers::new();
        let seen_by_listener = set.clone();
        set.replace_all([
            (PeerId::from_u64(1), vec![key(1)]),
            (PeerId::from_u64(2), vec![]),
        ]);
        assert_eq!(seen_by_listener.len(), 2);
        assert!(seen_by_listener.contains(&PeerId::from_u64(2)));
        assert_eq!(
            seen_by_listener.keys(&PeerId::from_u64(1)),
            Some(vec![key(1)])
        );
        set.replace_all(Vec::<(PeerId, Vec<PublicKey>)>::new());
        assert!(seen_by_listener.is_empty());
    }

    #[test]
    fn timestamps_strictly_increase_per_key() {
        let t = AntiReplayTimestamps::new();
        assert_eq!(t.check_and_store(key(1), 1), Ok(()));
        assert_eq!(t.check_and_store(key(1), 1), Err(1), "same timestamp");
        assert_eq!(t.check_and_store(key(1), 0), Err(1), "older timestamp");
        assert_eq!(
            t.check_and_store(key(2), 0),
            Ok(()),
            "another key has its own"
        );
        assert_eq!(t.check_and_store(key(1), 2), Ok(()));
        assert_eq!(t.last(&key(1)), Some(2));
        assert_eq!(t.len(), 2);
    }
}
