//! The handshake both ends run on a fresh TCP connection before it becomes a peer: its wire
//! layout, an incremental parser that refuses a bad prefix as soon as it sees it, the checks
//! that decide whether the connection may proceed, and the blocking exchange used by
//! `connect` (the listener drives the same parser from its `mio::Poll`).
//!
//! # Wire layout
//!
//! Each side writes one 69-byte hello as soon as the connection is up, without waiting for the
//! other's, then reads the other's. The exchange is symmetric: both hellos have the same
//! layout and both sides apply the same checks, so both refuse a mismatch.
//!
//! | Offset | Length | Field |
//! |---|---|---|
//! | 0 | 4 | magic: `53 59 4e 50` (ASCII `SYNP`) |
//! | 4 | 1 | messaging version: `00` = V1 (the wire format of `proto`) |
//! | 5 | 32 | the sender's `PeerId` |
//! | 37 | 32 | the sender's protocols, a 256-bit bitmap: `ProtocolId(p)` is bit `p % 8` (least significant first) of byte `p / 8` |
//!
//! Checks, in order: the magic (checked on the first bytes received, so a stranger speaking
//! another protocol is refused without waiting for 69 bytes), the version (on byte 4), then
//! self-connection (the remote's id is ours) and at least one application protocol in common
//! (the health-check protocol, which every network speaks, does not count). The whole exchange
//! must finish within `handshake_timeout`. Nothing past byte 69 is read here: the remote may
//! start sending frames right after its hello, and those belong to the peer's reader.
//!
//! There is no authentication: the `PeerId` is taken on trust (the original runs Noise IK
//! first). Run on a trusted network or inside a secure tunnel.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use super::error::HandshakeError;
use crate::peer::PeerId;
use crate::proto::ProtocolId;

/// The first four bytes of every hello.
pub(crate) const MAGIC: [u8; 4] = *b"SYNP";
/// Messaging protocol V1, the only version spoken.
pub(crate) const VERSION_V1: u8 = 0;
/// Length of a hello.
pub(crate) const HELLO_LEN: usize = 69;

/// A set of protocols, as the 256-bit bitmap of the hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProtocolSet(pub(crate) [u8; 32]);

impl ProtocolSet {
    pub(crate) fn insert(&mut self, p: ProtocolId) {
        self.0[usize::from(p.0 / 8)] |= 1 << (p.0 % 8);
    }

    pub(crate) fn intersection(&self, other: &ProtocolSet) -> ProtocolSet {
        let mut out = ProtocolSet::default();
        for (o, (a, b)) in out.0.iter_mut().zip(self.0.iter().zip(&other.0)) {
            *o = a & b;
        }
        out
    }

    pub(crate) fn remove(&mut self, p: ProtocolId) {
        self.0[usize::from(p.0 / 8)] &= !(1 << (p.0 % 8));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

/// One side's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) peer_id: PeerId,
    pub(crate) protocols: ProtocolSet,
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION_V1;
        out[5..37].copy_from_slice(&self.peer_id.0);
        out[37..].copy_from_slice(&self.protocols.0);
        out
    }

    /// Parses the bytes received so far (never more than [`HELLO_LEN`]): `Ok(None)` if more
    /// are needed, an error as soon as the prefix is wrong.
    pub(crate) fn parse(buf: &[u8]) -> Result<Option<Hello>, HandshakeError> {
        let magic_len = buf.len().min(4);
        if buf[..magic_len] != MAGIC[..magic_len] {
            return Err(HandshakeError::BadMagic(buf[..magic_len].to_vec()));
        }
        if let Some(&v) = buf.get(4)
            && v != VERSION_V1
        {
            return Err(HandshakeError::UnsupportedVersion(v));
        }
        if buf.len() < HELLO_LEN {
            return Ok(None);
        }
        let mut peer_id = [0u8; 32];
        peer_id.copy_from_slice(&buf[5..37]);
        let mut protocols = [0u8; 32];
        protocols.copy_from_slice(&buf[37..HELLO_LEN]);
        Ok(Some(Hello {
            peer_id: PeerId(peer_id),
            protocols: ProtocolSet(protocols),
        }))
    }

    /// Whether a connection between `self` (local) and `remote` may proceed.
    pub(crate) fn check(&self, remote: &Hello, reserved: ProtocolId) -> Result<(), HandshakeError> {
        if remote.peer_id == self.peer_id {
            return Err(HandshakeError::SelfConnection);
        }
        let mut common = self.protocols.intersection(&remote.protocols);
        common.remove(reserved);
        if common.is_empty() {
            return Err(HandshakeError::NoCommonProtocol);
        }
        Ok(())
    }
}

/// Runs the handshake on a blocking socket: writes `local`, reads and checks the remote's
/// hello, all before `deadline`. Leaves the socket's timeouts cleared.
pub(crate) fn exchange(
    stream: &TcpStream,
    local: &Hello,
    reserved: ProtocolId,
    deadline: Instant,
) -> Result<Hello, HandshakeError> {
    let result = exchange_inner(stream, local, deadline).and_then(|remote| {
        local.check(&remote, reserved)?;
        Ok(remote)
    });
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    result
}

fn exchange_inner(
    mut stream: &TcpStream,
    local: &Hello,
    deadline: Instant,
) -> Result<Hello, HandshakeError> {
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HandshakeError::TimedOut)
    };
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(HandshakeError::Io)?;
    stream
        .write_all(&local.encode())
        .map_err(|e| timeout_or_io(e, deadline))?;
    let mut buf = [0u8; HELLO_LEN];
    let mut filled = 0;
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(HandshakeError::Io)?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(n) => {
                filled += n;
                if let Some(hello) = Hello::parse(&buf[..filled])? {
                    return Ok(hello);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => match timeout_or_io(e, deadline) {
                // A timeout shorter than asked (it is rounded): wait out the rest.
                HandshakeError::TimedOut if Instant::now() < deadline => {}
                e => return Err(e),
            },
        }
    }
}

/// Socket timeouts surface as `WouldBlock` (Linux) or `TimedOut`.
fn timeout_or_io(e: io::Error, deadline: Instant) -> HandshakeError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => HandshakeError::TimedOut,
        ErrorKind::UnexpectedEof if Instant::now() < deadline => HandshakeError::Closed,
        _ => HandshakeError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: u64, protocols: &[u8]) -> Hello {
        let mut set = ProtocolSet::default();
        for p in protocols {
            set.insert(ProtocolId(*p));
        }
        Hello {
            peer_id: PeerId::from_u64(id),
            protocols: set,
        }
    }

    #[test]
    fn layout_byte_by_byte() {
        let bytes = hello(0x0102, &[0, 5, 9, 255]).encode();
        assert_eq!(&bytes[..5], b"SYNP\x00");
        // The peer id, as `from_u64` lays it out: low 32 bits first, the u64 last.
        assert_eq!(&bytes[5..9], [0, 0, 0x01, 0x02]);
        assert!(bytes[9..35].iter().all(|b| *b == 0));
        assert_eq!(&bytes[5 + 30..37], [0x01, 0x02]);
        let mut bitmap = [0u8; 32];
        bitmap[0] = 0b0010_0001; // protocols 0 and 5
        bitmap[1] = 0b0000_0010; // protocol 9
        bitmap[31] = 0b1000_0000; // protocol 255
        assert_eq!(&bytes[37..], bitmap);
    }

    #[test]
    fn parses_at_every_split_point() {
        let h = hello(7, &[1, 2]);
        let bytes = h.encode();
        for n in 0..HELLO_LEN {
            assert_eq!(Hello::parse(&bytes[..n]).unwrap(), None, "prefix {n}");
        }
        assert_eq!(Hello::parse(&bytes).unwrap(), Some(h));
    }

    #[test]
    fn refuses_bad_prefix_early() {
        assert!(matches!(
            Hello::parse(b"GE"),
            Err(HandshakeError::BadMagic(b)) if b == b"GE"
        ));
        assert!(matches!(
            Hello::parse(b"SYNP\x01"),
            Err(HandshakeError::UnsupportedVersion(1))
        ));
        assert_eq!(Hello::parse(b"SYN").unwrap(), None);
    }

    #[test]
    fn checks_self_and_common_protocols() {
        let reserved = ProtocolId(5);
        let a = hello(1, &[1, 5]);
        assert!(matches!(
            a.check(&hello(1, &[1]), reserved),
            Err(HandshakeError::SelfConnection)
        ));
        assert!(matches!(
            a.check(&hello(2, &[2, 5]), reserved),
            Err(HandshakeError::NoCommonProtocol)
        ));
        assert!(a.check(&hello(2, &[1, 2, 5]), reserved).is_ok());
    }
}
