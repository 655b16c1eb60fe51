//! The Noise IK handshake as Aptos runs it (`network/framework/src/noise/handshake.rs`): the
//! dialer's [`Initiator`] and the listener's [`Responder`], byte in, byte out. The message
//! layouts are in the [module docs](super).
//!
//! The responder's checks, and their order, are listed on [`Responder::accept`]. The
//! message's fixed length makes the client's payload exactly the 8-byte timestamp, so Aptos's
//! `MissingAntiReplayTimestamp` cannot arise here.
//!
//! The dialer checks nothing beyond the Noise handshake itself, which proves that the
//! responder holds the key dialed; like Aptos, it notes whether the peer it dialed is in the
//! trusted set.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use super::config::NoiseConfig;
use super::error::{CryptoError, HandshakeError};
use super::ik::{IkInitiator, IkResponder};
use super::keys::{KEY_LEN, PublicKey};
use super::transport::{NoiseSession, TAG_LEN};
use super::trust::{AuthMode, Lookup, Trust};
use crate::PeerId;

/// Bytes in the prologue: the client's peer id, then the responder's public key.
pub const PROLOGUE_LEN: usize = 32 + KEY_LEN;
/// Bytes in the anti-replay timestamp (milliseconds since the Unix epoch, little-endian).
pub const TIMESTAMP_LEN: usize = 8;
/// Bytes in the client's Noise message: `e`, encrypted `s`, encrypted timestamp.
pub const CLIENT_NOISE_LEN: usize = KEY_LEN + (KEY_LEN + TAG_LEN) + (TIMESTAMP_LEN + TAG_LEN);
/// Bytes the client sends: the prologue in clear, then its Noise message (168).
pub const CLIENT_MESSAGE_LEN: usize = PROLOGUE_LEN + CLIENT_NOISE_LEN;
/// Bytes the server answers: `e`, then the tag of an empty payload (48).
pub const SERVER_MESSAGE_LEN: usize = KEY_LEN + TAG_LEN;

/// The prologue a client sends in clear and both sides mix into the handshake: the client's
/// peer id, then the public key it expects the responder to hold.
pub fn prologue(client: PeerId, responder_key: &PublicKey) -> [u8; PROLOGUE_LEN] {
    let mut out = [0u8; PROLOGUE_LEN];
    out[..32].copy_from_slice(&client.0);
    out[32..].copy_from_slice(responder_key.as_bytes());
    out
}

/// Milliseconds from the Unix epoch to `now` (0 before it), the unit of the anti-replay
/// timestamp.
pub fn unix_millis(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The initiator's payload: `unix_millis(now)` as 8 little-endian bytes (Aptos
/// `AntiReplayTimestamps::now`).
pub fn timestamp_payload(now: SystemTime) -> [u8; TIMESTAMP_LEN] {
    unix_millis(now).to_le_bytes()
}

/// Gathers a fixed-length handshake message from reads of any size.
struct Inbox<const N: usize> {
    buf: [u8; N],
    filled: usize,
}

impl<const N: usize> Inbox<N> {
    const fn new() -> Inbox<N> {
        Inbox {
            buf: [0; N],
            filled: 0,
        }
    }

    fn read(&mut self, data: &[u8]) -> usize {
        let take = data.len().min(N - self.filled);
        self.buf[self.filled..self.filled + take].copy_from_slice(&data[..take]);
        self.filled += take;
        take
    }

    fn full(&self) -> Result<&[u8; N], HandshakeError> {
        if self.filled < N {
            return Err(HandshakeError::Incomplete {
                received: self.filled,
                expected: N,
            });
        }
        Ok(&self.buf)
    }
}

/// The dialer's side: built with the remote's peer id and key, it holds the first message to
/// send; then it takes the server's 48-byte answer and yields the session.
///
/// ```text
/// let mut init = Initiator::new(&config, peer, key, SystemTime::now())?;
/// socket.write_all(init.first_message())?;
/// let mut answer = [0; SERVER_MESSAGE_LEN];
/// socket.read_exact(&mut answer)?;          // exactly: later bytes are transport data
/// init.read(&answer);
/// let session = init.finish()?;
/// ```
pub struct Initiator {
    config: NoiseConfig,
    ik: IkInitiator,
    message: [u8; CLIENT_MESSAGE_LEN],
    inbox: Inbox<SERVER_MESSAGE_LEN>,
    remote_peer_id: PeerId,
    remote_key: PublicKey,
}

impl Initiator {
    /// Starts a handshake with the node `remote_peer_id` holding `remote_key`, stamped with
    /// `now` (the wall clock, which the responder requires to grow from one handshake to the
    /// next: two dials to the same responder within the same millisecond are refused as a
    /// replay in mutual mode, as in Aptos).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Crypto`] if the random source fails.
    pub fn new(
        config: &NoiseConfig,
        remote_peer_id: PeerId,
        remote_key: PublicKey,
        now: SystemTime,
    ) -> Result<Initiator, HandshakeError> {
        Initiator::start(config, remote_peer_id, remote_key, now, None)
    }

    pub(crate) fn start(
        config: &NoiseConfig,
        remote_peer_id: PeerId,
        remote_key: PublicKey,
        now: SystemTime,
        ephemeral: Option<&[u8; KEY_LEN]>,
    ) -> Result<Initiator, HandshakeError> {
        let mut message = [0u8; CLIENT_MESSAGE_LEN];
        let (head, noise) = message.split_at_mut(PROLOGUE_LEN);
        head.copy_from_slice(&prologue(config.peer_id(), &remote_key));
        let (ik, len) = IkInitiator::start(
            config.keypair().private_bytes(),
            remote_key.as_bytes(),
            head,
            &timestamp_payload(now),
            ephemeral,
            noise,
        )
        .map_err(|e| config.refuse(HandshakeError::Crypto(CryptoError(e)), false))?;
        debug_assert_eq!(len, CLIENT_NOISE_LEN);
        Ok(Initiator {
            config: config.clone(),
            ik,
            message,
            inbox: Inbox::new(),
            remote_peer_id,
            remote_key,
        })
    }

    /// The 168 bytes to send: the prologue, then the Noise message.
    pub fn first_message(&self) -> &[u8; CLIENT_MESSAGE_LEN] {
        &self.message
    }

    /// Takes bytes of the server's answer; returns how many were used (never more than
    /// [`remaining`](Initiator::remaining): later bytes are transport data, for the
    /// [`NoiseReader`](super::NoiseReader)).
    pub fn read(&mut self, data: &[u8]) -> usize {
        self.inbox.read(data)
    }

    /// Bytes of the answer still expected.
    pub fn remaining(&self) -> usize {
        SERVER_MESSAGE_LEN - self.inbox.filled
    }

    /// Checks the server's answer and establishes the session.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::ServerMessageRejected`] if the answer does not authenticate (the
    /// server does not hold the key dialed, or the bytes were altered);
    /// [`HandshakeError::Incomplete`] if called before the whole answer was read.
    pub fn finish(self) -> Result<NoiseSession, HandshakeError> {
        let config = self.config;
        let answer = self.inbox.full().map_err(|e| config.refuse(e, false))?;
        let mut payload = [0u8; SERVER_MESSAGE_LEN];
        let (_, keys) = self.ik.finish(answer, &mut payload).map_err(|e| {
            let e = match e {
                snow::Error::Decrypt => HandshakeError::ServerMessageRejected,
                e => HandshakeError::Crypto(CryptoError(e)),
            };
            config.refuse(e, false)
        })?;
        let trust = if config.trusted_peers().contains(&self.remote_peer_id) {
            Trust::Trusted
        } else {
            Trust::Untrusted
        };
        config.counters().outbound_completed.fetch_add(1, Relaxed);
        log::debug!(
            "noise: handshake with {} ({}) complete, {trust:?}",
            self.remote_peer_id,
            self.remote_key
        );
        Ok(NoiseSession::new(
            self.remote_peer_id,
            self.remote_key,
            trust,
            &keys,
            config.counters().clone(),
        ))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("remote_peer_id", &self.remote_peer_id)
            .field("remote_key", &self.remote_key)
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

/// The listener's side: it gathers the client's 168 bytes, then checks them and answers.
///
/// ```text
/// let mut resp = Responder::new(&config);
/// while resp.remaining() > 0 {                   // on each readable event
///     let n = socket.read(&mut buf[..resp.remaining()])?;
///     resp.read(&buf[..n]);
/// }
/// let Accepted { response, session } = resp.accept()?;
/// socket.write_all(&response)?;
/// ```
pub struct Responder {
    config: NoiseConfig,
    inbox: Inbox<CLIENT_MESSAGE_LEN>,
}

/// What a responder that lets a client in produces.
#[derive(Debug)]
pub struct Accepted {
    /// The 48 bytes to send back.
    pub response: [u8; SERVER_MESSAGE_LEN],
    /// The session, ready to split.
    pub session: NoiseSession,
}

impl Responder {
    /// A responder for one inbound connection.
    pub fn new(config: &NoiseConfig) -> Responder {
        Responder {
            config: config.clone(),
            inbox: Inbox::new(),
        }
    }

    /// Takes bytes of the client's message; returns how many were used (never more than
    /// [`remaining`](Responder::remaining)).
    pub fn read(&mut self, data: &[u8]) -> usize {
        self.inbox.read(data)
    }

    /// Bytes of the client's message still expected.
    pub fn remaining(&self) -> usize {
        CLIENT_MESSAGE_LEN - self.inbox.filled
    }

    /// Checks the client's message and answers it. The checks run in Aptos's order, and the
    /// first that fails decides the error: the announced peer id is not our own
    /// ([`SelfDial`](HandshakeError::SelfDial)); the key the client expects is ours
    /// ([`WrongResponderKey`](HandshakeError::WrongResponderKey)); the Noise message
    /// authenticates ([`ClientMessageRejected`](HandshakeError::ClientMessageRejected)); the
    /// [`AuthMode`] lets the client in ([`UnknownPeer`](HandshakeError::UnknownPeer),
    /// [`UntrustedKey`](HandshakeError::UntrustedKey),
    /// [`PeerIdMismatch`](HandshakeError::PeerIdMismatch)); in mutual mode, its timestamp is
    /// newer than the last one accepted for its key ([`Replay`](HandshakeError::Replay)).
    /// Only then is the timestamp stored and the answer built. A message that gets as far as
    /// the Noise message costs two x25519 operations, the answer two more.
    ///
    /// # Errors
    ///
    /// The check that failed, as a [`HandshakeError`]; [`HandshakeError::Incomplete`] if
    /// called before the whole message was read. Every refusal is counted and logged.
    pub fn accept(self) -> Result<Accepted, HandshakeError> {
        self.accept_with(None)
    }

    pub(crate) fn accept_with(
        self,
        ephemeral: Option<&[u8; KEY_LEN]>,
    ) -> Result<Accepted, HandshakeError> {
        let config = &self.config;
        let result = self.inbox.full().and_then(|m| check(config, m, ephemeral));
        match result {
            Ok(accepted) => {
                config.counters().inbound_accepted.fetch_add(1, Relaxed);
                log::debug!(
                    "noise: accepted {} ({}), {:?}",
                    accepted.session.remote_peer_id(),
                    accepted.session.remote_public_key(),
                    accepted.session.trust()
                );
                Ok(accepted)
            }
            Err(e) => Err(config.refuse(e, true)),
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

fn check(
    config: &NoiseConfig,
    message: &[u8; CLIENT_MESSAGE_LEN],
    ephemeral: Option<&[u8; KEY_LEN]>,
) -> Result<Accepted, HandshakeError> {
    let (prologue, noise) = message.split_at(PROLOGUE_LEN);
    let mut id = [0u8; 32];
    id.copy_from_slice(&prologue[..32]);
    let peer = PeerId(id);
    if peer == config.peer_id() {
        return Err(HandshakeError::SelfDial);
    }
    let mut expected = [0u8; KEY_LEN];
    expected.copy_from_slice(&prologue[32..]);
    let expected = PublicKey::from_bytes(expected);
    if expected != config.public_key() {
        return Err(HandshakeError::WrongResponderKey { peer, expected });
    }

    let mut payload = [0u8; CLIENT_NOISE_LEN];
    let (ik, key, len) = IkResponder::read(
        config.keypair().private_bytes(),
        prologue,
        noise,
        ephemeral,
        &mut payload,
    )
    .map_err(|e| match e {
        snow::Error::Decrypt => HandshakeError::ClientMessageRejected { peer },
        e => HandshakeError::Crypto(CryptoError(e)),
    })?;
    let key = PublicKey::from_bytes(key);
    debug_assert_eq!(len, TIMESTAMP_LEN, "fixed by the message's length");

    let trust = match (config.mode(), config.trusted_peers().lookup(&peer, &key)) {
        (_, Lookup::Trusted) => Trust::Trusted,
        (_, Lookup::UntrustedKey) => return Err(HandshakeError::UntrustedKey { peer, key }),
        (AuthMode::Mutual, Lookup::UnknownPeer) => {
            return Err(HandshakeError::UnknownPeer { peer });
        }
        (AuthMode::MaybeMutual, Lookup::UnknownPeer) => {
            let derived = key.derived_peer_id();
            if derived != peer {
                return Err(HandshakeError::PeerIdMismatch {
                    claimed: peer,
                    derived,
                });
            }
            Trust::Untrusted
        }
    };

    if config.mode() == AuthMode::Mutual {
        let mut stamp = [0u8; TIMESTAMP_LEN];
        stamp.copy_from_slice(&payload[..TIMESTAMP_LEN]);
        let timestamp = u64::from_le_bytes(stamp);
        config
            .anti_replay()
            .check_and_store(key, timestamp)
            .map_err(|last| HandshakeError::Replay {
                peer,
                timestamp,
                last,
            })?;
    }

    let mut response = [0u8; SERVER_MESSAGE_LEN];
    let (len, keys) = ik
        .answer(&[], &mut response)
        .map_err(|e| HandshakeError::Crypto(CryptoError(e)))?;
    debug_assert_eq!(len, SERVER_MESSAGE_LEN);
    let session = NoiseSession::new(peer, key, trust, &keys, config.counters().clone());
    Ok(Accepted { response, session })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::noise::keys::StaticKeypair;
    use crate::noise::trust::TrustedPeers;

    const CLIENT_E: [u8; 32] = [0x11; 32];
    const SERVER_E: [u8; 32] = [0x22; 32];

    fn at_millis(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn node(seed: u8, id: u64, mode: AuthMode, trusted: &TrustedPeers) -> NoiseConfig {
        let key = StaticKeypair::from_private_bytes([seed; 32]);
        NoiseConfig::new(key, PeerId::from_u64(id), mode, trusted.clone())
    }

    #[test]
    fn sizes_are_aptos_constants() {
        // NoiseUpgrader: PROLOGUE_SIZE = PeerId::LENGTH + PUBLIC_KEY_SIZE; CLIENT_MESSAGE_SIZE =
        // PROLOGUE_SIZE + handshake_init_msg_len(TIMESTAMP_SIZE); SERVER_MESSAGE_SIZE =
        // handshake_resp_msg_len(0).
        assert_eq!(PROLOGUE_LEN, 64);
        assert_eq!(TIMESTAMP_LEN, 8);
        assert_eq!(CLIENT_NOISE_LEN, 32 + (32 + 16) + (8 + 16));
        assert_eq!(CLIENT_MESSAGE_LEN, 168);
        assert_eq!(SERVER_MESSAGE_LEN, 48);
    }

    #[test]
    fn timestamp_payload_matches_aptos_example() {
        // The example in AntiReplayTimestamps::now: [157, 126, 253, 97, 114, 1, 0, 0].
        assert_eq!(
            timestamp_payload(at_millis(1_590_781_902_493)),
            [157, 126, 253, 97, 114, 1, 0, 0]
        );
        assert_eq!(
            timestamp_payload(at_millis(1_700_000_000_123)),
            [0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00]
        );
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }

    #[test]
    fn prologue_is_client_id_then_server_key() {
        let p = prologue(PeerId([0xaa; 32]), &PublicKey::from_bytes([0xbb; 32]));
        assert_eq!(p[..32], [0xaa; 32]);
        assert_eq!(p[32..], [0xbb; 32]);
    }

    #[test]
    fn messages_byte_by_byte() {
        let trusted = TrustedPeers::new();
        let client = node(1, 0x0a0b, AuthMode::Mutual, &trusted);
        let server = node(2, 0x0c0d, AuthMode::Mutual, &trusted);
        trusted.insert(client.peer_id(), [client.public_key()]);
        let now = at_millis(1_700_000_000_123);
        let init = Initiator::start(
            &client,
            server.peer_id(),
            server.public_key(),
            now,
            Some(&CLIENT_E),
        )
        .unwrap();
        let m = init.first_message();
        assert_eq!(m.len(), 168);
        assert_eq!(
            m[..32],
            client.peer_id().0,
            "the client's peer id, in clear"
        );
        assert_eq!(&m[32..64], server.public_key().as_bytes(), "the key dialed");
        let e = StaticKeypair::from_private_bytes(CLIENT_E).public_key();
        assert_eq!(&m[64..96], e.as_bytes(), "e, in clear");

        // The same Noise message, built from a hand-made prologue and payload.
        let mut hand_prologue = client.peer_id().0.to_vec();
        hand_prologue.extend_from_slice(server.public_key().as_bytes());
        let mut expected = [0u8; CLIENT_NOISE_LEN];
        IkInitiator::start(
            client.keypair().private_bytes(),
            server.public_key().as_bytes(),
            &hand_prologue,
            &[0x7b, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00],
            Some(&CLIENT_E),
            &mut expected,
        )
        .unwrap();
        assert_eq!(m[64..], expected);

        let mut resp = Responder::new(&server);
        assert_eq!(resp.read(&m[..]), 168);
        let accepted = resp.accept_with(Some(&SERVER_E)).unwrap();
        let se = StaticKeypair::from_private_bytes(SERVER_E).public_key();
        assert_eq!(&accepted.response[..32], se.as_bytes(), "the server's e");
        assert_eq!(
            server.anti_replay().last(&client.public_key()),
            Some(1_700_000_000_123)
        );
        assert_eq!(accepted.session.remote_peer_id(), client.peer_id());

        // Deterministic ephemerals give deterministic messages.
        let again = Initiator::start(
            &client,
            server.peer_id(),
            server.public_key(),
            now,
            Some(&CLIENT_E),
        );
        assert_eq!(again.unwrap().first_message(), m);
    }

    #[test]
    fn reads_take_no_more_than_the_message() {
        let trusted = TrustedPeers::new();
        let server = node(2, 2, AuthMode::MaybeMutual, &trusted);
        let mut resp = Responder::new(&server);
        assert_eq!(resp.read(&[0; 100]), 100);
        assert_eq!(resp.remaining(), 68);
        assert_eq!(resp.read(&[0; 100]), 68, "bytes past the message are left");
        assert_eq!(resp.read(&[0; 1]), 0);
        let mut resp = Responder::new(&server);
        resp.read(&[0; 167]);
        assert!(matches!(
            resp.accept(),
            Err(HandshakeError::Incomplete {
                received: 167,
                expected: 168
            })
        ));
    }
}
