//! A connection on its way to becoming a peer: a non-blocking TCP connect (for a dial), then
//! the upgrade (`upgrade.rs`), driven by whichever thread's `mio::Poll` it is registered with
//! (the listener's or the dialer's). [`Pending::drive`] does all that the socket allows right
//! now and says where things stand; the owner calls it on every event of the socket's token,
//! and [`Pending::expired`] once its deadline has passed.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::error::HandshakeError;
use super::upgrade::{Progress, Upgrade, Upgraded};
use crate::noise::{NoiseReader, NoiseWriter};
use crate::peer::PeerId;

/// Where a pending connection stands after [`Pending::drive`].
#[derive(Debug)]
pub(crate) enum Step {
    /// Waiting for the socket.
    Waiting,
    /// The remote's identity is known: the owner decides, then calls
    /// [`Pending::proceed`] (and `drive` again) or drops the connection.
    Identified(PeerId),
    /// Upgraded: hand the socket ([`Pending::into_std`]) to a peer.
    Done(Upgraded),
    /// The connection failed; drop it.
    Failed(Failure),
}

/// Why a pending connection failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The TCP connect failed or timed out.
    Connect(io::Error),
    /// The upgrade failed.
    Handshake(HandshakeError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Upgrading,
}

/// One connection in its connect or upgrade.
#[derive(Debug)]
pub(crate) struct Pending {
    stream: TcpStream,
    upgrade: Upgrade,
    phase: Phase,
    /// The end of the current phase.
    deadline: Instant,
    handshake_timeout: Duration,
    /// The upgrade's outcome, held back until our last bytes are written.
    finished: Option<Upgraded>,
}

impl Pending {
    /// An accepted connection: the upgrade starts at once.
    pub(crate) fn inbound(
        stream: std::net::TcpStream,
        upgrade: Upgrade,
        handshake_timeout: Duration,
    ) -> io::Result<Pending> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Pending {
            stream: TcpStream::from_std(stream),
            upgrade,
            phase: Phase::Upgrading,
            deadline: Instant::now() + handshake_timeout,
            handshake_timeout,
            finished: None,
        })
    }

    /// Starts a non-blocking connect to `addr`; the upgrade starts once it succeeds.
    pub(crate) fn outbound(
        addr: SocketAddr,
        upgrade: Upgrade,
        dial_timeout: Duration,
        handshake_timeout: Duration,
    ) -> io::Result<Pending> {
        Ok(Pending {
            stream: TcpStream::connect(addr)?,
            upgrade,
            phase: Phase::Connecting,
            deadline: Instant::now() + dial_timeout,
            handshake_timeout,
            finished: None,
        })
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut self.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The failure to report once the deadline has passed.
    pub(crate) fn expired(&self) -> Failure {
        match self.phase {
            Phase::Connecting => Failure::Connect(io::Error::new(
                ErrorKind::TimedOut,
                "no connection within dial_timeout",
            )),
            Phase::Upgrading => Failure::Handshake(HandshakeError::TimedOut),
        }
    }

    /// Goes on after [`Step::Identified`].
    pub(crate) fn proceed(&mut self) {
        self.upgrade.proceed();
    }

    /// Does what the socket allows now: finishes the connect, writes what the upgrade has to
    /// say, reads exactly what it wants. Edge-triggered polls report only changes, so this
    /// goes on until the socket would block.
    pub(crate) fn drive(&mut self) -> Step {
        if self.phase == Phase::Connecting {
            match self.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return Step::Failed(Failure::Connect(e)),
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    self.phase = Phase::Upgrading;
                    self.deadline = Instant::now() + self.handshake_timeout;
                    if let Err(e) = self.stream.set_nodelay(true) {
                        return Step::Failed(Failure::Connect(e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotConnected => return Step::Waiting,
                Err(e) => return Step::Failed(Failure::Connect(e)),
            }
        }
        let fail = |e: HandshakeError| Step::Failed(Failure::Handshake(e));
        let mut buf = [0u8; 256];
        loop {
            while !self.upgrade.output().is_empty() {
                match self.stream.write(self.upgrade.output()) {
                    Ok(0) => return fail(HandshakeError::Io(ErrorKind::WriteZero.into())),
                    Ok(n) => self.upgrade.wrote(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return fail(HandshakeError::Io(e)),
                }
            }
            if let Some(done) = self.finished {
                return if self.upgrade.output().is_empty() {
                    Step::Done(done)
                } else {
                    Step::Waiting
                };
            }
            let want = self.upgrade.want().min(buf.len());
            if want == 0 {
                return Step::Waiting;
            }
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => return fail(HandshakeError::Closed),
                Ok(n) => match self.upgrade.input(&buf[..n]) {
                    Ok(Progress::Pending) => {}
                    Ok(Progress::Identified(p)) => return Step::Identified(p),
                    // Loop once more: our message may not be written whole yet.
                    Ok(Progress::Done(u)) => self.finished = Some(u),
                    Err(e) => return fail(e),
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Waiting,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return fail(HandshakeError::Io(e)),
            }
        }
    }

    /// The upgraded socket, taken out of `registry`, and over Noise the session's halves, for
    /// the peer's threads.
    pub(crate) fn into_parts(
        mut self,
        registry: &Registry,
    ) -> (std::net::TcpStream, Option<(NoiseWriter, NoiseReader)>) {
        let _ = registry.deregister(&mut self.stream);
        (self.stream.into(), self.upgrade.into_noise())
    }

    /// Takes the socket out of `registry` before it is dropped.
    pub(crate) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}
