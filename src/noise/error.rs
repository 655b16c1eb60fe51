//! The Noise layer's errors, one type per operation: the handshake ([`HandshakeError`], with a
//! fieldless [`HandshakeErrorKind`] for counting), reading the transport ([`ReadError`]),
//! writing it ([`WriteError`]), and the rare failure of the cryptographic library itself
//! ([`CryptoError`]).
//!
//! Handshake errors are grouped as rustls groups its own: a remote that is not allowed in
//! (unknown or untrusted key, replayed timestamp, self-dial), bytes that do not authenticate
//! (tampered, or encrypted for another key), and caller misuse (a message of the wrong length).

use std::fmt;

use super::keys::PublicKey;
use crate::PeerId;

/// The cryptographic library failed for a reason that is not the remote's bytes: the random
/// source, or an internal state error. Not expected in practice.
#[derive(Debug)]
pub struct CryptoError(pub(crate) snow::Error);

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "noise library error: {}", self.0)
    }
}

impl std::error::Error for CryptoError {}

/// Why a Noise handshake was refused or could not complete.
///
/// Each refusal is also counted in [`NoiseStats`](super::NoiseStats) under its
/// [`kind`](HandshakeError::kind), and logged (`warn!` on the responder, whose refusals are
/// the remote's doing; the log is thinned to powers of two per kind so a flood cannot fill it).
#[derive(Debug)]
pub enum HandshakeError {
    /// The client announced our own peer id: we dialed ourselves (Aptos `SelfDialDetected`).
    SelfDial,
    /// The client's prologue names a responder key other than ours: it meant to reach another
    /// node (Aptos `ClientExpectingDifferentPubkey`).
    WrongResponderKey {
        /// The peer id the client announced.
        peer: PeerId,
        /// The key it expected us to hold.
        expected: PublicKey,
    },
    /// The client's Noise message did not authenticate: tampered, or encrypted for a key and
    /// prologue other than ours (Aptos `ServerParseClient`).
    ClientMessageRejected {
        /// The peer id the client announced.
        peer: PeerId,
    },
    /// The server's response did not authenticate: tampered, or the server does not hold the
    /// key we dialed (Aptos `ClientFinalizeFailed`).
    ServerMessageRejected,
    /// Mutual mode: the client's peer id is not in the trusted set (Aptos
    /// `UnauthenticatedClient`).
    UnknownPeer {
        /// The peer id the client announced.
        peer: PeerId,
    },
    /// The client's peer id is trusted, but not with the key it proved (Aptos
    /// `UnauthenticatedClientPubkey`).
    UntrustedKey {
        /// The peer id the client announced.
        peer: PeerId,
        /// The static key it proved.
        key: PublicKey,
    },
    /// Maybe-mutual mode: an untrusted client announced a peer id that is not the one derived
    /// from its key (Aptos `ClientPeerIdMismatch`).
    PeerIdMismatch {
        /// The peer id the client announced.
        claimed: PeerId,
        /// The one derived from the key it proved.
        derived: PeerId,
    },
    /// Mutual mode: the client's timestamp is not newer than the last one accepted for its key:
    /// a replayed or stale handshake (Aptos `ServerReplayDetected`).
    Replay {
        /// The peer id the client announced.
        peer: PeerId,
        /// The timestamp received, in milliseconds since the Unix epoch.
        timestamp: u64,
        /// The last one accepted for the same key.
        last: u64,
    },
    /// A handshake message handed in has the wrong length (for the server's response, one
    /// that was cut short). Caller misuse or a truncated message.
    WrongLength {
        /// The bytes handed in.
        received: usize,
        /// The message's fixed length.
        expected: usize,
    },
    /// [`Responder::accept`](super::Responder::accept) was called before the whole client
    /// message arrived. Caller misuse.
    Incomplete {
        /// The bytes received so far.
        received: usize,
        /// The message's fixed length.
        expected: usize,
    },
    /// The cryptographic library failed (random source or internal state).
    Crypto(CryptoError),
}

/// The fieldless kind of a [`HandshakeError`], to count outcomes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each names the `HandshakeError` variant of the same name
pub enum HandshakeErrorKind {
    SelfDial,
    WrongResponderKey,
    ClientMessageRejected,
    ServerMessageRejected,
    UnknownPeer,
    UntrustedKey,
    PeerIdMismatch,
    Replay,
    WrongLength,
    Incomplete,
    Crypto,
}

impl HandshakeErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [HandshakeErrorKind; 11] = [
        HandshakeErrorKind::SelfDial,
        HandshakeErrorKind::WrongResponderKey,
        HandshakeErrorKind::ClientMessageRejected,
        HandshakeErrorKind::ServerMessageRejected,
        HandshakeErrorKind::UnknownPeer,
        HandshakeErrorKind::UntrustedKey,
        HandshakeErrorKind::PeerIdMismatch,
        HandshakeErrorKind::Replay,
        HandshakeErrorKind::WrongLength,
        HandshakeErrorKind::Incomplete,
        HandshakeErrorKind::Crypto,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl HandshakeError {
    /// This error's kind.
    pub fn kind(&self) -> HandshakeErrorKind {
        match self {
            HandshakeError::SelfDial => HandshakeErrorKind::SelfDial,
            HandshakeError::WrongResponderKey { .. } => HandshakeErrorKind::WrongResponderKey,
            HandshakeError::ClientMessageRejected { .. } => {
                HandshakeErrorKind::ClientMessageRejected
            }
            HandshakeError::ServerMessageRejected => HandshakeErrorKind::ServerMessageRejected,
            HandshakeError::UnknownPeer { .. } => HandshakeErrorKind::UnknownPeer,
            HandshakeError::UntrustedKey { .. } => HandshakeErrorKind::UntrustedKey,
            HandshakeError::PeerIdMismatch { .. } => HandshakeErrorKind::PeerIdMismatch,
            HandshakeError::Replay { .. } => HandshakeErrorKind::Replay,
            HandshakeError::WrongLength { .. } => HandshakeErrorKind::WrongLength,
            HandshakeError::Incomplete { .. } => HandshakeErrorKind::Incomplete,
            HandshakeError::Crypto(_) => HandshakeErrorKind::Crypto,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::SelfDial => f.write_str("client announced our own peer id (self-dial)"),
            HandshakeError::WrongResponderKey { peer, expected } => write!(
                f,
                "client {peer} expects responder key {expected}, which is not ours"
            ),
            HandshakeError::ClientMessageRejected { peer } => write!(
                f,
                "handshake message of client {peer} failed authentication \
                 (tampered, or encrypted for another key)"
            ),
            HandshakeError::ServerMessageRejected => f.write_str(
                "server's handshake response failed authentication \
                 (tampered, or the server does not hold the key dialed)",
            ),
            HandshakeError::UnknownPeer { peer } => {
                write!(f, "client {peer} is not in the trusted peers set")
            }
            HandshakeError::UntrustedKey { peer, key } => {
                write!(
                    f,
                    "client {peer} proved key {key}, which is not trusted for it"
                )
            }
            HandshakeError::PeerIdMismatch { claimed, derived } => write!(
                f,
                "untrusted client announced peer id {claimed}, but its key derives {derived}"
            ),
            HandshakeError::Replay {
                peer,
                timestamp,
                last,
            } => write!(
                f,
                "client {peer} replayed or reused timestamp {timestamp} (last accepted {last})"
            ),
            HandshakeError::WrongLength { received, expected } => write!(
                f,
                "handshake message of {received} bytes, expected exactly {expected}"
            ),
            HandshakeError::Incomplete { received, expected } => write!(
                f,
                "handshake message incomplete: {received} of {expected} bytes"
            ),
            HandshakeError::Crypto(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Crypto(e) => Some(e),
            _ => None,
        }
    }
}

/// Why the transport's [`NoiseReader`](super::NoiseReader) refused its input. Every one is
/// fatal: the reader answers each later call with the same error, as Aptos's session stays
/// closed after a decryption error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A length prefix of 0 (Aptos treats it as an unexpected end of stream).
    EmptyMessage,
    /// A length prefix under 16, too short to hold the authentication tag.
    MessageTooShort {
        /// The announced length.
        len: usize,
    },
    /// A message failed authentication: tampered, reordered, replayed, or encrypted under
    /// another key. Its plaintext is never returned.
    Decrypt {
        /// The message's position in the stream (its nonce), from 0.
        message: u64,
    },
    /// The stream ended inside a message (reported by [`finish`](super::NoiseReader::finish)).
    Truncated {
        /// Bytes of the message (its prefix included) that arrived.
        received: usize,
        /// Bytes it should have had (2 for a message whose prefix is incomplete).
        expected: usize,
    },
    /// 2^64 − 1 messages were received: no nonce is left (unreachable in practice).
    NonceExhausted,
}

impl ReadError {
    pub(crate) fn index(self) -> usize {
        match self {
            ReadError::EmptyMessage => 0,
            ReadError::MessageTooShort { .. } => 1,
            ReadError::Decrypt { .. } => 2,
            ReadError::Truncated { .. } => 3,
            ReadError::NonceExhausted => 4,
        }
    }

    pub(crate) const KINDS: usize = 5;
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::EmptyMessage => f.write_str("noise message with length 0"),
            ReadError::MessageTooShort { len } => write!(
                f,
                "noise message of {len} bytes is shorter than its 16-byte tag"
            ),
            ReadError::Decrypt { message } => write!(
                f,
                "noise message {message} failed authentication (tampered or out of order)"
            ),
            ReadError::Truncated { received, expected } => write!(
                f,
                "stream ended inside a noise message ({received} of {expected} bytes)"
            ),
            ReadError::NonceExhausted => f.write_str("noise receive nonce exhausted"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why the transport's [`NoiseWriter`](super::NoiseWriter) could not encrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// 2^64 − 1 messages were sent: no nonce is left (unreachable in practice). Fatal.
    NonceExhausted,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::NonceExhausted => f.write_str("noise send nonce exhausted"),
        }
    }
}

impl std::error::Error for WriteError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_in_declaration_order() {
        for (i, kind) in HandshakeErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn display_is_lowercase_without_period() {
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(HandshakeError::SelfDial),
            Box::new(HandshakeError::ServerMessageRejected),
            Box::new(HandshakeError::Replay {
                peer: PeerId::from_u64(1),
                timestamp: 5,
                last: 7,
            }),
            Box::new(ReadError::MessageTooShort { len: 3 }),
            Box::new(ReadError::Decrypt { message: 9 }),
            Box::new(WriteError::NonceExhausted),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(s.starts_with(|c: char| c.is_lowercase()), "{s}");
            assert!(!s.ends_with('.'), "{s}");
        }
    }
}
