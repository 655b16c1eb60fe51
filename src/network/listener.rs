//! The listener thread (`sp-lis-<local>`), one per `listen` call. It waits only in a
//! `mio::Poll` over the listening socket, a `Waker` (to stop) and the sockets of the inbound
//! connections still in their upgrade, with the earliest upgrade deadline as the poll's
//! timeout. Upgrades are driven here, non-blocking (`pending.rs`), so a slow or silent client
//! holds no thread: it only occupies one of `max_pending_handshakes` slots until its deadline.
//!
//! An accepted connection goes through the identity step (over Noise, the responder's side of
//! the Noise IK handshake, reading at most what the client's message still lacks) and the
//! Aptos handshake; a refused
//! or timed-out one is logged and closed; an upgraded one is handed to the network, which
//! spawns the peer and places it in the peer table (settling any collision there: an inbound
//! connection from a peer already connected is not refused here, since the remote may have
//! restarted and lost the old one).

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::Inner;
use super::error::HandshakeError;
use super::event::ConnectionOrigin;
use super::pending::{Failure, Pending, Step};
use super::upgrade::Upgrade;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_HANDSHAKE: usize = 2;

/// A running listener: wake it to stop it.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Listener {
    /// Starts accepting on `listener` (already bound), on a thread named `name`.
    pub(crate) fn spawn(
        inner: Arc<Inner>,
        listener: TcpListener,
        name: String,
    ) -> io::Result<Listener> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let run = Accept {
            inner,
            listener,
            poll,
            stop: stop.clone(),
            pending: HashMap::new(),
            next_token: FIRST_HANDSHAKE,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(move || run.run())?;
        Ok(Listener {
            addr,
            waker,
            stop,
            thread,
        })
    }

    /// Stops accepting, drops the upgrades in progress and joins the thread.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if self.thread.join().is_err() {
            log::error!("listener on {} panicked", self.addr);
        }
    }
}

struct Accept {
    inner: Arc<Inner>,
    listener: TcpListener,
    poll: Poll,
    stop: Arc<AtomicBool>,
    pending: HashMap<Token, (Pending, SocketAddr)>,
    next_token: usize,
}

impl Accept {
    fn run(mut self) {
        let local = self.inner.local.peer_id;
        log::debug!(
            "network {local}: listening on {:?}",
            self.listener.local_addr()
        );
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .pending
                .values()
                .map(|(p, _)| p.deadline())
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                log::error!("network {local}: listener poll failed: {e}");
                break;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    t => self.progress(t),
                }
            }
            self.expire();
        }
        log::debug!(
            "network {local}: listener exits ({} upgrades dropped)",
            self.pending.len()
        );
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => self.start(stream, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // E.g. out of descriptors: retried when the next connection arrives.
                    log::warn!("network {}: accept failed: {e}", self.inner.local.peer_id);
                    return;
                }
            }
        }
    }

    fn start(&mut self, stream: TcpStream, from: SocketAddr) {
        let local = self.inner.local.peer_id;
        if self.pending.len() >= self.inner.config.max_pending_handshakes {
            log::warn!(
                "network {local}: refused connection from {from}: too many handshakes in progress"
            );
            return;
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        let upgrade = Upgrade::inbound(self.inner.local.clone());
        let started = Pending::inbound(stream, upgrade, self.inner.config.handshake_timeout)
            .and_then(|mut p| p.register(self.poll.registry(), token).map(|()| p));
        match started {
            Ok(p) => {
                self.pending.insert(token, (p, from));
                // The remote's bytes may already be there: edges report only changes.
                self.progress(token);
            }
            Err(e) => self.refused(from, &HandshakeError::Io(e)),
        }
    }

    /// Drives one upgrade as far as the socket allows, and acts on its end.
    fn progress(&mut self, token: Token) {
        loop {
            let Some((p, _)) = self.pending.get_mut(&token) else {
                return;
            };
            match p.drive() {
                Step::Waiting => return,
                // Inbound connections are settled by the peer table, not here.
                Step::Identified(_) => p.proceed(),
                Step::Done(upgraded) => {
                    let (p, from) = self.pending.remove(&token).expect("just found");
                    let (stream, noise) = p.into_parts(self.poll.registry());
                    if let Err(e) =
                        self.inner
                            .admit(stream, upgraded, noise, ConnectionOrigin::Inbound)
                    {
                        log::warn!(
                            "network {}: connection from {from} (peer {}) not admitted: {e}",
                            self.inner.local.peer_id,
                            upgraded.remote
                        );
                    }
                    return;
                }
                Step::Failed(f) => {
                    let (p, from) = self.pending.remove(&token).expect("just found");
                    p.close(self.poll.registry());
                    let e = match f {
                        Failure::Handshake(e) => e,
                        Failure::Connect(e) => HandshakeError::Io(e),
                    };
                    self.refused(from, &e);
                    return;
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<Token> = self
            .pending
            .iter()
            .filter(|(_, (p, _))| p.deadline() <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some((p, from)) = self.pending.remove(&t) {
                p.close(self.poll.registry());
                self.refused(from, &HandshakeError::TimedOut);
            }
        }
    }

    fn refused(&self, from: SocketAddr, e: &HandshakeError) {
        let local = self.inner.local.peer_id;
        match e {
            // Also what a dialer does on finding us already connected: not misbehaviour.
            HandshakeError::Closed => {
                log::debug!("network {local}: connection from {from} closed during its upgrade")
            }
            // Counted by kind and logged, thinned, by the Noise layer: a flood of bad
            // handshakes costs a log line per doubling, not one per connection.
            HandshakeError::Noise(e) => {
                log::debug!("network {local}: refused connection from {from}: {e}")
            }
            e => log::warn!("network {local}: refused connection from {from}: {e}"),
        }
    }
}
