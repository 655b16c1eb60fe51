//! The upgrade of a fresh TCP connection into a peer connection, sans-IO: which bytes to write,
//! how many to read next (never past the upgrade's last byte: what follows is the first frame
//! of messaging, and belongs to the peer's reader), and what the bytes read mean. The
//! listener and the dialer drive it from their `mio::Poll` (`pending.rs`).
//!
//! Two steps, as in the original (which runs Noise IK, then the handshake):
//!
//! 1. **Identity.** Who the remote is. With [`Transport::PlainTcp`](super::Transport), the only
//!    transport so far, each side writes its 32-byte `PeerId` and reads the remote's: a plain,
//!    unauthenticated exchange, specific to syncpeer, for trusted networks and tests (the
//!    original has no such step; its Noise handshake proves the remote's key). Checked here:
//!    not ourselves ([`HandshakeError::SelfConnection`]), and on a dial to a kept peer, the peer
//!    expected ([`HandshakeError::UnexpectedPeer`]). The driver then decides whether to go on
//!    ([`Upgrade::proceed`]): a dial to a peer already connected stops here, so the remote
//!    never completes a handshake on it and never uses it.
//! 2. **Aptos handshake v1.** Each side writes its `HandshakeMsg` behind a `u16` big-endian
//!    length and reads the remote's, then both negotiate (`handshake.rs`).
//!
//! A Noise IK step replaces step 1 alone: it yields the remote's `PeerId` the same way. (The
//! bytes of step 2 and of messaging then travel inside Noise frames, which the peer's threads
//! would have to carry too; they do not yet.)

use std::sync::Arc;

use super::error::HandshakeError;
use super::handshake::{HandshakeMsg, MAX_HANDSHAKE_LEN, ProtocolIdSet};
use crate::peer::PeerId;

/// Length of the plain identity step's message: one `PeerId`.
pub(crate) const IDENTITY_LEN: usize = 32;

/// This node's side of every upgrade.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) peer_id: PeerId,
    pub(crate) handshake: HandshakeMsg,
    /// The handshake message behind its length prefix, encoded once.
    frame: Vec<u8>,
}

impl Local {
    pub(crate) fn new(peer_id: PeerId, handshake: HandshakeMsg) -> Local {
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

/// One connection's upgrade.
#[derive(Debug)]
pub(crate) struct Upgrade {
    local: Arc<Local>,
    expected: Option<PeerId>,
    stage: Stage,
    out: Vec<u8>,
    written: usize,
    buf: Vec<u8>,
    remote: Option<PeerId>,
}

impl Upgrade {
    /// Starts an upgrade; `expected` is the peer a dial is meant to reach, if known.
    pub(crate) fn new(local: Arc<Local>, expected: Option<PeerId>) -> Upgrade {
        let out = local.peer_id.0.to_vec();
        Upgrade {
            local,
            expected,
            stage: Stage::Identity,
            out,
            written: 0,
            buf: Vec::with_capacity(IDENTITY_LEN),
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

    /// How many bytes to read at most now: exactly what the current item still lacks, so
    /// nothing past the upgrade is ever read. Zero while waiting for `proceed` and after the
    /// end.
    pub(crate) fn want(&self) -> usize {
        let item = match self.stage {
            Stage::Identity => IDENTITY_LEN,
            Stage::Length => 2,
            Stage::Message(len) => len,
            Stage::Identified | Stage::Done => return 0,
        };
        item - self.buf.len()
    }

    /// Takes bytes read from the remote (at most [`want`](Upgrade::want) of them).
    pub(crate) fn input(&mut self, data: &[u8]) -> Result<Progress, HandshakeError> {
        debug_assert!(data.len() <= self.want(), "read past the current item");
        let take = data.len().min(self.want());
        self.buf.extend_from_slice(&data[..take]);
        if self.want() > 0 {
            return Ok(Progress::Pending);
        }
        match self.stage {
            Stage::Identity => {
                let mut id = [0u8; IDENTITY_LEN];
                id.copy_from_slice(&self.buf);
                self.buf.clear();
                let remote = PeerId(id);
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
            Stage::Length => {
                let len = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]]));
                self.buf.clear();
                if len == 0 {
                    return HandshakeMsg::decode(&[]).map(|_| Progress::Pending);
                }
                self.buf.reserve(len);
                self.stage = Stage::Message(len);
                Ok(Progress::Pending)
            }
            Stage::Message(_) => {
                let theirs = HandshakeMsg::decode(&self.buf)?;
                let negotiated = self.local.handshake.negotiate(&theirs)?;
                self.stage = Stage::Done;
                let remote = self.remote.expect("the identity step came first");
                Ok(Progress::Done(Upgraded {
                    remote,
                    protocols: negotiated.protocols,
                }))
            }
            Stage::Identified | Stage::Done => Ok(Progress::Pending),
        }
    }

    /// Goes on with the handshake after [`Progress::Identified`]: queues our message.
    pub(crate) fn proceed(&mut self) {
        if self.stage == Stage::Identified {
            self.out.extend_from_slice(&self.local.frame);
            self.stage = Stage::Length;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::handshake::{ChainId, NetworkId};
    use crate::proto::ProtocolId;

    fn local(id: u64, protocols: &[u8], chain: u8) -> Arc<Local> {
        let set = protocols.iter().map(|p| ProtocolId(*p)).collect();
        let msg = HandshakeMsg::v1(set, ChainId(chain), NetworkId::Validator);
        Arc::new(Local::new(PeerId::from_u64(id), msg))
    }

    type Outcome = Option<Result<Upgraded, HandshakeError>>;

    /// One side's turn: write all it has into `outbox`, read up to `chunk` of what it wants
    /// from `inbox`.
    fn turn(me: &mut Upgrade, inbox: &mut Vec<u8>, outbox: &mut Vec<u8>, chunk: usize) -> Outcome {
        let out = me.output().to_vec();
        outbox.extend_from_slice(&out);
        me.wrote(out.len());
        let n = me.want().min(chunk).min(inbox.len());
        let got: Vec<u8> = inbox.drain(..n).collect();
        match me.input(&got) {
            Ok(Progress::Pending) => None,
            Ok(Progress::Identified(_)) => {
                me.proceed();
                None
            }
            Ok(Progress::Done(u)) => Some(Ok(u)),
            Err(e) => Some(Err(e)),
        }
    }

    /// Runs two upgrades against each other, feeding `chunk` bytes at a time, each side
    /// reading only what it wants. Returns both outcomes.
    fn run(
        a: &mut Upgrade,
        b: &mut Upgrade,
        chunk: usize,
    ) -> [Result<Upgraded, HandshakeError>; 2] {
        let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
        let (mut da, mut db): (Outcome, Outcome) = (None, None);
        for _ in 0..1000 {
            if da.is_none() {
                da = turn(a, &mut to_a, &mut to_b, chunk);
            }
            if db.is_none() {
                db = turn(b, &mut to_b, &mut to_a, chunk);
            }
            if da.is_some() && db.is_some() {
                break;
            }
        }
        [da.expect("a finishes"), db.expect("b finishes")]
    }

    #[test]
    fn bytes_on_the_wire_and_the_outcome() {
        let (la, lb) = (local(1, &[0, 5], 4), local(2, &[0, 2, 5], 4));
        let mut a = Upgrade::new(la.clone(), Some(PeerId::from_u64(2)));
        assert_eq!(a.output(), PeerId::from_u64(1).0);
        assert_eq!(a.want(), 32);
        a.wrote(32);
        assert!(a.output().is_empty());
        assert_eq!(
            a.input(&PeerId::from_u64(2).0).unwrap(),
            Progress::Identified(PeerId::from_u64(2))
        );
        assert_eq!(a.want(), 0, "nothing more is read before proceed");
        a.proceed();
        // V1 {0, 5}: bit vector 0x84; chain 4; Validator.
        assert_eq!(a.output(), [0x00, 0x06, 0x01, 0x00, 0x01, 0x84, 0x04, 0x00]);
        assert_eq!(a.want(), 2);
        let mut b = Upgrade::new(lb, None);
        let [ra, rb] = run(&mut Upgrade::new(la, None), &mut b, usize::MAX);
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let common = [ProtocolId(0), ProtocolId(5)].into_iter().collect();
        assert_eq!(ra.protocols, common);
        assert_eq!(rb.protocols, common);
        assert_eq!(
            (ra.remote, rb.remote),
            (PeerId::from_u64(2), PeerId::from_u64(1))
        );
    }

    #[test]
    fn completes_one_byte_at_a_time_and_reads_nothing_past_the_end() {
        let (la, lb) = (local(1, &[3], 4), local(2, &[3], 4));
        let (mut a, mut b) = (Upgrade::new(la, None), Upgrade::new(lb, None));
        let [ra, rb] = run(&mut a, &mut b, 1);
        assert!(ra.is_ok() && rb.is_ok());
        assert_eq!((a.want(), b.want()), (0, 0));
    }

    #[test]
    fn refusals_on_both_sides() {
        // Our own id comes back: a self-connection.
        let l = local(1, &[3], 4);
        let mut a = Upgrade::new(l.clone(), None);
        assert!(matches!(
            a.input(&PeerId::from_u64(1).0),
            Err(HandshakeError::SelfConnection)
        ));
        // A dial reaching the wrong peer.
        let mut a = Upgrade::new(l, Some(PeerId::from_u64(9)));
        assert!(matches!(
            a.input(&PeerId::from_u64(2).0),
            Err(HandshakeError::UnexpectedPeer { expected, actual })
                if expected == PeerId::from_u64(9) && actual == PeerId::from_u64(2)
        ));
        // Another chain: both sides refuse, each naming the other's.
        let (mut a, mut b) = (
            Upgrade::new(local(1, &[3], 4), None),
            Upgrade::new(local(2, &[3], 7), None),
        );
        match run(&mut a, &mut b, 5) {
            [
                Err(HandshakeError::InvalidChainId { theirs: t1, .. }),
                Err(HandshakeError::InvalidChainId { theirs: t2, .. }),
            ] => assert_eq!((t1.0, t2.0), (7, 4)),
            other => panic!("{other:?}"),
        }
        // An empty message.
        let mut a = Upgrade::new(local(1, &[3], 4), None);
        a.input(&PeerId::from_u64(2).0).unwrap();
        a.proceed();
        assert!(matches!(
            a.input(&[0, 0]),
            Err(HandshakeError::Malformed { .. })
        ));
    }
}
