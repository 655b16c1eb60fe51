//! The dialer thread (`sp-dia-<local>`), one per network: every outbound connection is made
//! here, both the application's [`connect`](super::Network::connect) calls and the redials of
//! the peers it asked to keep connected (the original's connectivity manager). It waits only
//! in a `mio::Poll` over the sockets being dialed and upgraded, and a `Waker` that announces a
//! command; the poll's timeout is the nearest of the dials' deadlines, the kept peers' next
//! attempts and the periodic check. Dials run side by side, so a silent address holds none of
//! the others back.
//!
//! A dial whose identity step names a peer that had a live connection already when the dial
//! was asked for (or that another dial of ours got that far first) is dropped there, before
//! its handshake: the remote never completes its side, so it never uses the connection, and
//! the live one is left alone. Otherwise the connection is upgraded and admitted, where the
//! peer table settles any collision with a connection the remote dialed meanwhile (a
//! simultaneous dial).
//!
//! Kept peers: `Connected` until the peer table says otherwise (the monitor wakes this thread
//! whenever a connection ends, and a periodic check catches anything else); then `Waiting`
//! until the next attempt is due (see `backoff.rs`); then `Dialing`. Each attempt is reported
//! as a [`NetworkEvent::Dialing`], each failure as a [`NetworkEvent::DialFailed`] with the delay
//! before the next.

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token, Waker};

use super::Inner;
use super::backoff::{Backoff, jitter};
use super::error::ConnectError;
use super::event::{ConnectionOrigin, NetworkEvent};
use super::health::Nonces;
use super::pending::{Failure, Pending, Step};
use super::upgrade::Upgrade;
use crate::noise::PublicKey;
use crate::peer::PeerId;

const WAKER: Token = Token(0);

/// Every address `addr` resolves to.
///
/// # Errors
///
/// The resolver's, or `InvalidInput` if it resolved to nothing.
pub(crate) fn resolve(addr: impl std::net::ToSocketAddrs) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "the address resolved to nothing",
        ));
    }
    Ok(addrs)
}

/// Whom a dial is meant to reach: over Noise, the peer and the key it must prove; in
/// plaintext, the peer expected if known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) peer: Option<PeerId>,
    pub(crate) key: Option<PublicKey>,
}

/// What the network asks of the dialer.
#[derive(Debug)]
pub(crate) enum Command {
    /// Dial these addresses in turn; answer on `reply`.
    Connect {
        addrs: Vec<SocketAddr>,
        target: Target,
        reply: Sender<Result<PeerId, ConnectError>>,
    },
    /// Keep `peer` connected, dialing `addrs` in turn (over Noise, expecting `key`).
    Keep {
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        key: Option<PublicKey>,
    },
    /// Stop redialing `peer`.
    Forget(PeerId),
    /// A connection ended: look at the kept peers again.
    Check,
}

/// The network's side of the dialer: send a command and wake the thread.
#[derive(Debug)]
pub(crate) struct DialerHandle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
}

impl DialerHandle {
    /// False once the dialer has stopped.
    pub(crate) fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok() && self.waker.wake().is_ok()
    }
}

/// What the thread takes when it starts.
#[derive(Debug)]
pub(crate) struct Parts {
    poll: Poll,
    rx: Receiver<Command>,
    stop: Arc<AtomicBool>,
}

/// Creates the poll, the waker and the command channel; the handle goes into `Inner`, before
/// the thread exists.
pub(crate) fn prepare() -> io::Result<(DialerHandle, Parts)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    Ok((DialerHandle { tx, waker }, Parts { poll, rx, stop }))
}

/// The running thread.
#[derive(Debug)]
pub(crate) struct Dialer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Dialer {
    pub(crate) fn spawn(inner: Arc<Inner>, parts: Parts, name: String) -> io::Result<Dialer> {
        let stop = parts.stop.clone();
        let seed = inner.seed();
        let run = Run {
            inner,
            poll: parts.poll,
            rx: parts.rx,
            stop: parts.stop,
            dials: HashMap::new(),
            identified: HashSet::new(),
            kept: HashMap::new(),
            next_token: 1,
            rand: Nonces::new(seed),
            next_check: Instant::now(),
            last_stamp: SystemTime::UNIX_EPOCH,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(256 * 1024)
            .spawn(move || run.run())?;
        Ok(Dialer { stop, thread })
    }

    /// Stops the thread, dropping the dials in progress (their `connect` callers get
    /// `ShuttingDown`), and joins it.
    pub(crate) fn stop(self, handle: &DialerHandle) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = handle.waker.wake();
        if self.thread.join().is_err() {
            log::error!("dialer thread panicked");
        }
    }
}

/// Who asked for a dial.
#[derive(Debug)]
enum Purpose {
    Connect(Sender<Result<PeerId, ConnectError>>, Target),
    Keep {
        peer: PeerId,
        key: Option<PublicKey>,
        attempt: u32,
    },
}

impl Purpose {
    fn target(&self) -> Target {
        match self {
            Purpose::Connect(_, target) => *target,
            Purpose::Keep { peer, key, .. } => Target {
                peer: Some(*peer),
                key: *key,
            },
        }
    }
}

#[derive(Debug)]
struct Dial {
    purpose: Purpose,
    addrs: Vec<SocketAddr>,
    /// Index in `addrs` of the address being dialed.
    at: usize,
    pending: Pending,
    /// The peer, once the identity step named it.
    identified: Option<PeerId>,
    /// When the dial was asked for.
    started: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeptState {
    Connected,
    Waiting(Instant),
    Dialing,
}

#[derive(Debug)]
struct Kept {
    addrs: Vec<SocketAddr>,
    key: Option<PublicKey>,
    backoff: Backoff,
    attempt: u32,
    state: KeptState,
}

struct Run {
    inner: Arc<Inner>,
    poll: Poll,
    rx: Receiver<Command>,
    stop: Arc<AtomicBool>,
    dials: HashMap<Token, Dial>,
    /// Peers one of our dials has identified and is upgrading.
    identified: HashSet<PeerId>,
    kept: HashMap<PeerId, Kept>,
    next_token: usize,
    rand: Nonces,
    next_check: Instant,
    /// The last Noise timestamp used (see `stamp`).
    last_stamp: SystemTime,
}

impl Run {
    fn run(mut self) {
        let local = self.inner.local.peer_id;
        log::debug!("network {local}: dialer started");
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .next_wake()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                log::error!("network {local}: dialer poll failed: {e}");
                break;
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            for event in &events {
                match event.token() {
                    WAKER => {}
                    t => self.progress(t),
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.command(c);
            }
            self.expire();
            self.check_kept();
        }
        log::debug!(
            "network {local}: dialer exits ({} dials dropped)",
            self.dials.len()
        );
    }

    fn next_wake(&self) -> Option<Instant> {
        let dials = self.dials.values().map(|d| d.pending.deadline());
        let kept = self.kept.values().filter_map(|k| match k.state {
            KeptState::Waiting(t) => Some(t),
            _ => None,
        });
        let check = (!self.kept.is_empty()).then_some(self.next_check);
        dials.chain(kept).chain(check).min()
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Connect {
                addrs,
                target,
                reply,
            } => self.start(Purpose::Connect(reply, target), addrs),
            Command::Keep { peer, addrs, key } => {
                let first = Instant::now() + self.jitter();
                let k = self.kept.entry(peer).or_insert(Kept {
                    addrs: Vec::new(),
                    key,
                    backoff: Backoff::default(),
                    attempt: 0,
                    state: KeptState::Waiting(first),
                });
                // As the original: new addresses start a fresh schedule.
                k.addrs = addrs;
                k.key = key;
                k.backoff.reset();
                if let KeptState::Waiting(_) = k.state {
                    k.state = KeptState::Waiting(first);
                }
            }
            Command::Forget(peer) => {
                self.kept.remove(&peer);
            }
            Command::Check => {}
        }
    }

    fn jitter(&mut self) -> std::time::Duration {
        jitter(&self.inner.config.reconnect, self.rand.next())
    }

    /// Moves each kept peer along: lost ones start waiting, due ones are dialed.
    fn check_kept(&mut self) {
        let now = Instant::now();
        if now >= self.next_check {
            self.next_check = now + self.inner.config.reconnect.check_interval;
        }
        let peers: Vec<PeerId> = self.kept.keys().copied().collect();
        for peer in peers {
            let connected = self.inner.registry.lock().is_connected(&peer);
            let jitter = self.jitter();
            let Some(k) = self.kept.get_mut(&peer) else {
                continue;
            };
            match k.state {
                KeptState::Connected if !connected => {
                    k.backoff.reset();
                    k.attempt = 0;
                    k.state = KeptState::Waiting(now + jitter);
                }
                KeptState::Waiting(_) if connected => {
                    k.backoff.reset();
                    k.attempt = 0;
                    k.state = KeptState::Connected;
                }
                KeptState::Waiting(t) if t <= now => {
                    k.attempt += 1;
                    k.state = KeptState::Dialing;
                    let (attempt, addrs, key) = (k.attempt, k.addrs.clone(), k.key);
                    self.inner.emit(NetworkEvent::Dialing {
                        peer_id: peer,
                        addr: addrs[0],
                        attempt,
                    });
                    self.start(Purpose::Keep { peer, key, attempt }, addrs);
                }
                _ => {}
            }
        }
    }

    /// Starts a dial of `addrs[0]`, going on to the next address while connects fail.
    fn start(&mut self, purpose: Purpose, addrs: Vec<SocketAddr>) {
        self.try_from(purpose, addrs, 0, None, Instant::now());
    }

    fn try_from(
        &mut self,
        purpose: Purpose,
        addrs: Vec<SocketAddr>,
        mut at: usize,
        mut last: Option<io::Error>,
        started: Instant,
    ) {
        let target = purpose.target();
        while let Some(&addr) = addrs.get(at) {
            let now = self.stamp();
            let upgrade =
                match Upgrade::outbound(self.inner.local.clone(), target.peer, target.key, now) {
                    Ok(u) => u,
                    Err(e) => {
                        log::warn!(
                            "network {}: cannot dial {addr}: {e}",
                            self.inner.local.peer_id
                        );
                        self.finish(purpose, Some(addr), Err(ConnectError::Handshake(e)));
                        return;
                    }
                };
            let token = Token(self.next_token);
            self.next_token += 1;
            let config = &self.inner.config;
            let pending =
                Pending::outbound(addr, upgrade, config.dial_timeout, config.handshake_timeout)
                    .and_then(|mut p| p.register(self.poll.registry(), token).map(|()| p));
            match pending {
                Ok(pending) => {
                    let dial = Dial {
                        purpose,
                        addrs,
                        at,
                        pending,
                        identified: None,
                        started,
                    };
                    self.dials.insert(token, dial);
                    // A loopback connect may be complete already; edges report only changes.
                    self.progress(token);
                    return;
                }
                Err(e) => {
                    last = Some(e);
                    at += 1;
                }
            }
        }
        let e = last.unwrap_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address"));
        self.finish(
            purpose,
            addrs.get(at.saturating_sub(1)).copied(),
            Err(ConnectError::Dial(e)),
        );
    }

    fn progress(&mut self, token: Token) {
        loop {
            let Some(d) = self.dials.get_mut(&token) else {
                return;
            };
            match d.pending.drive() {
                Step::Waiting => return,
                Step::Identified(peer) => {
                    let taken = self.identified.contains(&peer)
                        || (self.inner.registry.lock()).connected_before(&peer, Some(d.started));
                    if taken {
                        let d = self.remove(token);
                        let addr = d.addrs[d.at];
                        d.pending.close(self.poll.registry());
                        log::debug!(
                            "network {}: dial of {addr} reached peer {peer}, already connected",
                            self.inner.local.peer_id
                        );
                        self.finish(
                            d.purpose,
                            Some(addr),
                            Err(ConnectError::AlreadyConnected(peer)),
                        );
                        return;
                    }
                    self.identified.insert(peer);
                    d.identified = Some(peer);
                    d.pending.proceed();
                }
                Step::Done(upgraded) => {
                    let d = self.remove(token);
                    let addr = d.addrs[d.at];
                    let (stream, noise) = d.pending.into_parts(self.poll.registry());
                    let admitted =
                        self.inner
                            .admit(stream, upgraded, noise, ConnectionOrigin::Outbound);
                    self.finish(d.purpose, Some(addr), admitted);
                    return;
                }
                Step::Failed(f) => {
                    let d = self.remove(token);
                    self.failed(d, f);
                    return;
                }
            }
        }
    }

    /// The wall clock for a Noise handshake's anti-replay timestamp, made to grow by at least
    /// a millisecond from one dial to the next: a mutual-auth responder refuses a timestamp
    /// that is not newer than the last one it took from this node, and two dials of this node
    /// within one millisecond would otherwise look like a replay.
    fn stamp(&mut self) -> SystemTime {
        let now = SystemTime::now().max(self.last_stamp + Duration::from_millis(1));
        self.last_stamp = now;
        now
    }

    fn remove(&mut self, token: Token) -> Dial {
        let d = self.dials.remove(&token).expect("the caller found it");
        if let Some(p) = d.identified {
            self.identified.remove(&p);
        }
        d
    }

    fn failed(&mut self, d: Dial, f: Failure) {
        d.pending.close(self.poll.registry());
        let addr = d.addrs[d.at];
        match f {
            Failure::Connect(e) => {
                log::debug!(
                    "network {}: dial of {addr} failed: {e}",
                    self.inner.local.peer_id
                );
                self.try_from(d.purpose, d.addrs, d.at + 1, Some(e), d.started);
            }
            Failure::Handshake(e) => {
                log::warn!(
                    "network {}: handshake with {addr} failed: {e}",
                    self.inner.local.peer_id
                );
                self.finish(d.purpose, Some(addr), Err(ConnectError::Handshake(e)));
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<Token> = self
            .dials
            .iter()
            .filter(|(_, d)| d.pending.deadline() <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            let d = self.remove(t);
            let f = d.pending.expired();
            self.failed(d, f);
        }
    }

    /// Reports a dial's outcome to whoever asked.
    fn finish(
        &mut self,
        purpose: Purpose,
        addr: Option<SocketAddr>,
        result: Result<PeerId, ConnectError>,
    ) {
        match purpose {
            Purpose::Connect(reply, _) => {
                let _ = reply.send(result);
            }
            Purpose::Keep { peer, attempt, .. } => {
                let cfg = self.inner.config.reconnect.clone();
                let jitter = self.jitter();
                let Some(k) = self.kept.get_mut(&peer) else {
                    return; // forgotten meanwhile
                };
                match result {
                    Ok(_) | Err(ConnectError::AlreadyConnected(_)) => {
                        k.backoff.reset();
                        k.state = KeptState::Connected;
                    }
                    Err(e) => {
                        let retry_in = k.backoff.failed(&cfg) + jitter;
                        k.state = KeptState::Waiting(Instant::now() + retry_in);
                        self.inner.emit(NetworkEvent::DialFailed {
                            peer_id: peer,
                            addr: addr.unwrap_or(k.addrs[0]),
                            attempt,
                            error: e.to_string(),
                            retry_in,
                        });
                    }
                }
            }
        }
    }
}
