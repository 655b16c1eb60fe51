//! The upgrade of a fresh TCP connection into a peer connection, sans-IO: which bytes to write,
//! how many to read next (never past the upgrade's last byte: what follows is the first frame
//! of messaging, and belongs to the peer's reader), and what the bytes read mean. The
//! listener and the dialer drive it from their `mio::Poll` (`pending.rs`).
//!
//! Two steps, as in the original:
//!
//! 1. **Identity.** Who the remote is.
//!    - With [`ConnectionSecurity::Noise`], the Noise IK handshake (`crate::noise`): the dialer
//!      sends its 168-byte message and reads the 48-byte answer, the listener the other way
//!      round, reading at most what the message still lacks. The remote's `PeerId` is the one
//!      the handshake authenticated: the one dialed, or the one the client proved (checked
//!      against the trusted set as the node's [`AuthMode`](crate::noise::AuthMode) requires).
//!      From here on both directions are Noise transport messages.
//!    - With [`ConnectionSecurity::InsecurePlaintext`], each side writes its 32-byte `PeerId`
//!      and reads the remote's: a plain, unauthenticated exchange, specific to syncpeer, for
//!      trusted networks and tests.
//!
//!    Checked here: not ourselves ([`HandshakeError::SelfConnection`]), and on a dial to a
//!    known peer, the peer expected ([`HandshakeError::UnexpectedPeer`]). The driver then
//!    decides whether to go on ([`Upgrade::proceed`]): a dial to a peer already connected
//!    stops here, so the remote never completes a handshake on it and never uses it.
//! 2. **Aptos handshake v1.** Each side writes its `HandshakeMsg` behind a `u16` big-endian
//!    length and reads the remote's, then both negotiate (`handshake.rs`). Over Noise, the
//!    message is sealed as one Noise message (Aptos writes it and flushes), and the reader reads
//!    Noise messages whole and no further, so the Noise halves go to the peer's threads at a
//!    message boundary with their nonces where the handshake left them. A Noise message that
//!    carries anything past the handshake message is refused: the peer's reader would never
//!    see those bytes.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;

use super::error::HandshakeError;
use super::event::Authentication;
use super::handshake::{HandshakeMsg, MAX_HANDSHAKE_LEN, ProtocolIdSet};
use crate::noise::{
    ConnectionSecurity, Initiator, NoiseReader, NoiseSession, NoiseWriter, PublicKey, Responder,
};
use crate::peer::PeerId;

/// Length of the plain identity step's message: one `PeerId`.
pub(crate) const IDENTITY_LEN: usize = 32;

/// This node's side of every upgrade.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) peer_id: PeerId,
    pub(crate) handshake: HandshakeMsg,
    pub(crate) security: ConnectionSecurity,
    /// The handshake message behind its length prefix, encoded once.
    frame: Vec<u8>,
}

impl Local {
    pub(crate) fn new(
        peer_id: PeerId,
        handshake: HandshakeMsg,
        security: ConnectionSecurity,
    ) -> Local {
        let msg = handshake.encode();
        assert!(
            msg.len() <= MAX_HANDSHAKE_LEN,
            "a handshake with one version is under 50 bytes"
        );
        let mut frame = (msg.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&msg);
        Local {
            peer_id,
            handshake,
            security,
            frame,
        }
    }
}

/// What an upgrade settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Upgraded {
    pub(crate) remote: PeerId,
    /// The negotiated protocols: those both ends announced.
    pub(crate) protocols: ProtocolIdSet,
    /// How the remote proved who it is.
    pub(crate) authentication: Authentication,
}

/// What the bytes received so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed.
    Pending,
    /// The identity step is done: call [`Upgrade::proceed`] to go on, or drop the connection.
    Identified(PeerId),
    /// Both steps are done.
    Done(Upgraded),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Identity,
    Identified,
    Length,
    Message(usize),
    Done,
}

/// Where the identity step stands, and what carries the handshake's bytes after it.
#[derive(Debug)]
enum Identity {
    /// Plain identities, then plain bytes.
    Plain,
    /// A dial over Noise, waiting for the answer (boxed: the handshake state is large).
    Initiator(Box<Initiator>),
    /// An inbound connection over Noise, waiting for the client's message.
    Responder(Box<Responder>),
    /// The Noise session, once established.
    Secured(Box<Secured>),
    /// Between states, or after the halves were taken.
    Taken,
}

#[derive(Debug)]
struct Secured {
    writer: NoiseWriter,
    reader: NoiseReader,
    /// Opened and not yet consumed.
    plain: BytesMut,
    authentication: Authentication,
}

/// One connection's upgrade.
#[derive(Debug)]
pub(crate) struct Upgrade {
    local: Arc<Local>,
    expected: Option<PeerId>,
    identity: Identity,
    stage: Stage,
    out: BytesMut,
    written: usize,
    buf: Vec<u8>,
    remote: Option<PeerId>,
}

impl Upgrade {
    /// Starts the upgrade of an accepted connection.
    pub(crate) fn inbound(local: Arc<Local>) -> Upgrade {
        let identity = match &local.security {
            ConnectionSecurity::Noise(config) => {
                Identity::Responder(Box::new(Responder::new(config)))
            }
            ConnectionSecurity::InsecurePlaintext => Identity::Plain,
        };
        Upgrade::start(local, None, identity)
    }

    /// Starts the upgrade of a dial: `expected` is the peer it is meant to reach, and over
    /// Noise `key` the static key that peer must prove it holds; `now` stamps the Noise
    /// handshake (the anti-replay timestamp).
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Noise`] if the random source fails;
    /// [`HandshakeError::MissingKey`] over Noise without `expected` and `key` (the network's
    /// API keeps this from happening).
    pub(crate) fn outbound(
        local: Arc<Local>,
        expected: Option<PeerId>,
        key: Option<PublicKey>,
        now: SystemTime,
    ) -> Result<Upgrade, HandshakeError> {
        let identity = match (&local.security, expected, key) {
            (ConnectionSecurity::Noise(config), Some(peer), Some(key)) => {
                let init = Initiator::new(config, peer, key, now).map_err(HandshakeError::Noise)?;
                Identity::Initiator(Box::new(init))
            }
            (ConnectionSecurity::Noise(_), _, _) => return Err(HandshakeError::MissingKey),
            (ConnectionSecurity::InsecurePlaintext, _, _) => Identity::Plain,
        };
        Ok(Upgrade::start(local, expected, identity))
    }

    fn start(local: Arc<Local>, expected: Option<PeerId>, identity: Identity) -> Upgrade {
        let mut out = BytesMut::new();
        match &identity {
            Identity::Plain => out.extend_from_slice(&local.peer_id.0),
            Identity::Initiator(init) => out.extend_from_slice(init.first_message()),
            _ => {}
        }
        Upgrade {
            local,
            expected,
            identity,
            stage: Stage::Identity,
            out,
            written: 0,
            buf: Vec::new(),
            remote: None,
        }
    }

    /// The bytes still to write.
    pub(crate) fn output(&self) -> &[u8] {
        &self.out[self.written..]
    }

    /// `n` bytes of [`output`](Upgrade::output) were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.written = (self.written + n).min(self.out.len());
    }

    /// How many bytes to read at most now: exactly what the current item still lacks (over
    /// Noise, the current Noise message), so nothing past the upgrade is ever read. Zero while
    /// waiting for `proceed` and after the end.
    pub(crate) fn want(&self) -> usize {
        match (self.stage, &self.identity) {
            (Stage::Identified | Stage::Done, _) => 0,
            (Stage::Identity, Identity::Initiator(init)) => init.remaining(),
            (Stage::Identity, Identity::Responder(resp)) => resp.remaining(),
            (_, Identity::Secured(s)) => s.reader.message_remaining(),
            (Stage::Identity, _) => IDENTITY_LEN - self.buf.len(),
            (Stage::Length, _) => 2 - self.buf.len(),
            (Stage::Message(len), _) => len - self.buf.len(),
        }
    }

    /// Takes bytes read from the remote (at most [`want`](Upgrade::want) of them).
    pub(crate) fn input(&mut self, data: &[u8]) -> Result<Progress, HandshakeError> {
        debug_assert!(data.len() <= self.want(), "read past the current item");
        let data = &data[..data.len().min(self.want())];
        if self.stage == Stage::Identity {
            return self.identity_input(data);
        }
        match &mut self.identity {
            Identity::Secured(s) => {
                s.reader
                    .decrypt(data, &mut s.plain)
                    .map_err(HandshakeError::NoiseMessage)?;
                let plain = std::mem::take(&mut s.plain);
                let progress = self.handshake_input(&plain);
                if let Identity::Secured(s) = &mut self.identity {
                    // Give the buffer back, emptied, to be reused.
                    s.plain = plain;
                    s.plain.clear();
                }
                progress
            }
            _ => self.handshake_input(data),
        }
    }

    fn identity_input(&mut self, data: &[u8]) -> Result<Progress, HandshakeError> {
        let remote = match std::mem::replace(&mut self.identity, Identity::Taken) {
            Identity::Plain => {
                self.identity = Identity::Plain;
                self.buf.extend_from_slice(data);
                if self.buf.len() < IDENTITY_LEN {
                    return Ok(Progress::Pending);
                }
                let mut id = [0u8; IDENTITY_LEN];
                id.copy_from_slice(&self.buf);
                self.buf.clear();
                PeerId(id)
            }
            Identity::Initiator(mut init) => {
                init.read(data);
                if init.remaining() > 0 {
                    self.identity = Identity::Initiator(init);
                    return Ok(Progress::Pending);
                }
                self.secure(init.finish().map_err(HandshakeError::Noise)?)
            }
            Identity::Responder(mut resp) => {
                resp.read(data);
                if resp.remaining() > 0 {
                    self.identity = Identity::Responder(resp);
                    return Ok(Progress::Pending);
                }
                let accepted = resp.accept().map_err(HandshakeError::Noise)?;
                self.out.extend_from_slice(&accepted.response);
                self.secure(accepted.session)
            }
            other @ (Identity::Secured(_) | Identity::Taken) => {
                self.identity = other;
                return Ok(Progress::Pending);
            }
        };
        if remote == self.local.peer_id {
            return Err(HandshakeError::SelfConnection);
        }
        if let Some(expected) = self.expected
            && expected != remote
        {
            return Err(HandshakeError::UnexpectedPeer {
                expected,
                actual: remote,
            });
        }
        self.remote = Some(remote);
        self.stage = Stage::Identified;
        Ok(Progress::Identified(remote))
    }

    /// Keeps an established session's halves for the handshake; returns the remote's id.
    fn secure(&mut self, session: NoiseSession) -> PeerId {
        let remote = session.remote_peer_id();
        let authentication = Authentication::Noise {
            key: session.remote_public_key(),
            trust: session.trust(),
        };
        let (writer, reader) = session.split();
        self.identity = Identity::Secured(Box::new(Secured {
            writer,
            reader,
            plain: BytesMut::new(),
            authentication,
        }));
        remote
    }

    /// Plaintext of the Aptos handshake, in any chunking.
    fn handshake_input(&mut self, mut data: &[u8]) -> Result<Progress, HandshakeError> {
        loop {
            let item = match self.stage {
                Stage::Length => 2,
                Stage::Message(len) => len,
                Stage::Identity | Stage::Identified | Stage::Done => {
                    return if data.is_empty() {
                        Ok(Progress::Pending)
                    } else {
                        Err(HandshakeError::TrailingBytes { len: data.len() })
                    };
                }
            };
            let take = data.len().min(item - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < item {
                return Ok(Progress::Pending);
            }
            match self.stage {
                Stage::Length => {
                    let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
                    self.buf.clear();
                    if len == 0 {
                        return HandshakeMsg::decode(&[]).map(|_| Progress::Pending);
                    }
                    self.buf.reserve(len);
                    self.stage = Stage::Message(len);
                }
                _ => {
                    let theirs = HandshakeMsg::decode(&self.buf)?;
                    let negotiated = self.local.handshake.negotiate(&theirs)?;
                    self.stage = Stage::Done;
                    if !data.is_empty() {
                        return Err(HandshakeError::TrailingBytes { len: data.len() });
                    }
                    let remote = self.remote.expect("the identity step came first");
                    let authentication = match &self.identity {
                        Identity::Secured(s) => s.authentication,
                        _ => Authentication::InsecurePlaintext,
                    };
                    return Ok(Progress::Done(Upgraded {
                        remote,
                        protocols: negotiated.protocols,
                        authentication,
                    }));
                }
            }
        }
    }

    /// Goes on with the handshake after [`Progress::Identified`]: queues our message (over
    /// Noise, sealed as one Noise message).
    pub(crate) fn proceed(&mut self) {
        if self.stage != Stage::Identified {
            return;
        }
        match &mut self.identity {
            Identity::Secured(s) => {
                s.writer
                    .encrypt([&self.local.frame[..]], &mut self.out)
                    .expect("a fresh session has nonces left");
            }
            _ => self.out.extend_from_slice(&self.local.frame),
        }
        self.stage = Stage::Length;
    }

    /// After [`Progress::Done`]: the Noise session's halves for the peer's threads (none in
    /// plaintext), with their nonces where the handshake left them.
    pub(crate) fn into_noise(self) -> Option<(NoiseWriter, NoiseReader)> {
        match self.identity {
            Identity::Secured(s) => Some((s.writer, s.reader)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
