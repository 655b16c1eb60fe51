//! A [`Network`]: this node's set of peer connections over TCP. It accepts and dials
//! connections, upgrades each (Noise IK, or an insecure plaintext identity step chosen by name,
//! then the Aptos handshake v1), keeps at most
//! one connection per peer, keeps the peers the application names connected (redialing with
//! backoff), shares one set of handlers between all peers, broadcasts, checks every peer's
//! health and reports each connection's end with its [`DrainReport`].
//!
//! ```text
//!  listen ──▶ [sp-lis: mio Poll over listener + upgrades + Waker] ───────────┐ admit: spawn
//!  connect ─┐                                                                ├─▶ the Peer, place
//!  keep_connected ─▶ [sp-dia: mio Poll over dials + upgrades + Waker] ──────┘   it in the table
//!                          ▲ "a connection ended"                      │
//!  peer(id) → Link, broadcast, wait_for_peer ◀── [peer table: one current connection per peer]
//!                          │                                           │ events, to every
//!  [sp-mon: Select over notices, pings, pongs, the next round] ─────────┘ subscription
//! ```
//!
//! Threads: one listener per `listen`, one dialer, one monitor, and each connection's three.
//! Nothing else: upgrades are driven by the listener's and the dialer's polls, so a silent
//! remote holds no thread. The network's threads are named `sp-<role>-<local id>`, with `lis`,
//! `dia` and `mon` for the roles and the first four bytes of this node's id in hex (15 bytes,
//! the most a Linux thread name holds); their log lines start with `network <local id>`.
//!
//! # Security and upgrade
//!
//! A network runs every connection inside Noise IK, as Aptos does
//! ([`NetworkBuilder::noise`]), or, chosen by name for tests and networks that are trusted or
//! tunnelled already, in insecure plaintext ([`NetworkBuilder::insecure_plaintext`]); one of
//! the two is required.
//!
//! On a fresh TCP connection each side first establishes who the other is. Over Noise that is
//! the Noise IK handshake (`crate::noise`): the dialer names the peer and its static key
//! ([`connect`](Network::connect), [`keep_connected`](Network::keep_connected)) and the
//! handshake proves that the remote holds it; the listener checks the client's key against the
//! trusted set as its [`AuthMode`](crate::noise::AuthMode) says (mutual: only trusted peers,
//! with anti-replay timestamps; maybe-mutual: strangers too, as
//! [`Trust::Untrusted`](crate::noise::Trust)), and the trusted set can be updated while the
//! network runs ([`noise_config`](Network::noise_config)). A refused or failed handshake is a
//! typed [`HandshakeError::Noise`], counted by kind in the node's
//! [`NoiseStats`](crate::noise::NoiseStats) and logged. From then on every byte is encrypted,
//! the Aptos handshake's included, and the session's halves go to the connection's writer and
//! reader. In plaintext, each side sends its 32-byte `PeerId`, taken on trust
//! ([`connect_insecure`](Network::connect_insecure),
//! [`keep_connected_insecure`](Network::keep_connected_insecure)).
//!
//! Then both sides exchange the Aptos `HandshakeMsg` byte for byte (BCS, behind a `u16`
//! big-endian length: see `handshake.rs`) and negotiate as the original does: same
//! [`ChainId`], same [`NetworkId`], a common messaging version with at least one common
//! protocol. The common protocols are the connection's [`ConnectionInfo::protocols`], and a
//! [`Link`] refuses at once to send on any other ([`LinkError::NotNegotiated`]). How the
//! remote proved who it is stays in [`ConnectionInfo::authentication`].
//!
//! # One connection per peer
//!
//! A [`connect`](Network::connect) that reaches a peer with a live connection stops before
//! the handshake and returns [`ConnectError::AlreadyConnected`]: the live connection is left
//! alone. Simultaneous dials (this node and the remote dial each other at once) are settled
//! by the peer table as the original's peer manager does: both ends keep the connection
//! dialed by the larger `PeerId` (see `registry.rs`).
//!
//! # Kept peers
//!
//! [`keep_connected`](Network::keep_connected) names a peer and its address; from then on the
//! dialer keeps it connected, in the background: when it is not, it is dialed, and after each
//! failure redialed later, with exponential backoff and jitter up to a cap
//! ([`ReconnectConfig`]). Every attempt is reported as [`NetworkEvent::Dialing`] and every
//! failure as [`NetworkEvent::DialFailed`]. [`wait_for_peer`](Network::wait_for_peer) blocks
//! until a peer is connected.
//!
//! # Events
//!
//! Each [`events`](Network::events) call is a subscription of its own that receives every
//! event from then on; subscriptions do not take events from each other.
//!
//! # Shutdown
//!
//! [`Network::shutdown`] takes `&self`, so a network shared through an `Arc` can be shut down
//! by any of its owners. It first refuses new connections (the peer table is marked, so an
//! upgrade finishing meanwhile is closed rather than registered), stops and joins the dialer
//! and the listeners, then starts a graceful close of every connection at once (each drains
//! in its own threads, in parallel), waits for each to finish and collects the reports, and
//! last stops and joins the monitor, which by then has every `Disconnected` notice queued and
//! turns them into events; then every subscription disconnects. The first call returns the
//! reports; any later one, or one made while the first is under way, returns an empty list at
//! once. Dropping the `Network` (the last `Arc`) runs the same shutdown and discards the
//! reports.
//!
//! A close waits, up to `linger`, for the responses to the RPC requests already handed to the
//! application. So the thread that answers RPCs must not block in `shutdown` while requests sit
//! unanswered in its own queue (each connection would wait the whole `linger`): run the
//! shutdown on another thread and keep answering until it is over.
//!
//! ```
//! use std::time::Duration;
//! use syncpeer::network::Network;
//! use syncpeer::{Bytes, Inbound, PeerId, ProtocolId};
//!
//! const ASK: ProtocolId = ProtocolId(0);
//! let (tx, inbound) = crossbeam_channel::unbounded::<Inbound>();
//! // Plaintext, to keep the example on its point: see the next one for Noise.
//! let server = Network::builder(PeerId::from_u64(1)).insecure_plaintext().handler(ASK, tx).build()?;
//! let client = Network::builder(PeerId::from_u64(2)).insecure_plaintext().protocol(ASK).build()?;
//! client.connect_insecure(server.listen("127.0.0.1:0")?)?;
//! let link = client.wait_for_peer(PeerId::from_u64(1), Duration::from_secs(10))?;
//! let call = link.rpc_start(ASK, Bytes::from_static(b"q"), Duration::from_secs(10))?;
//! // A request has reached the server's RPC-answering thread; its answer is owed.
//! let mut owed = Some(inbound.recv_timeout(Duration::from_secs(10))?);
//!
//! // That thread decides to stop: it shuts down on a scoped thread and answers until that
//! // is done, so no close waits `linger` for this thread's queue.
//! let reports = std::thread::scope(|s| {
//!     let closing = s.spawn(|| server.shutdown());
//!     while !closing.is_finished() {
//!         let next = owed.take().or_else(|| inbound.recv_timeout(Duration::from_millis(5)).ok());
//!         if let Some(Inbound::Request { data, responder, .. }) = next {
//!             let _ = responder.respond(data);
//!         }
//!     }
//!     closing.join().expect("shutdown does not panic")
//! });
//! assert!(reports.iter().all(|(_, r)| r.is_clean()));
//! assert_eq!(call.wait()?, Bytes::from_static(b"q"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use syncpeer::network::{Authentication, Network, NetworkEvent};
//! use syncpeer::noise::{AuthMode, NoiseConfig, StaticKeypair, Trust, TrustedPeers};
//! use syncpeer::{Bytes, Inbound, PeerId, ProtocolId};
//!
//! const VOTES: ProtocolId = ProtocolId(1);
//! // Two validators: each holds a static key, and both trust both (mutual authentication).
//! let (id_a, key_a) = (PeerId::from_u64(1), StaticKeypair::generate()?);
//! let (id_b, key_b) = (PeerId::from_u64(2), StaticKeypair::generate()?);
//! let trusted = TrustedPeers::new();
//! trusted.insert(id_a, [key_a.public_key()]);
//! trusted.insert(id_b, [key_b.public_key()]);
//! let public_b = key_b.public_key();
//! let noise_a = NoiseConfig::new(key_a, id_a, AuthMode::Mutual, trusted.clone());
//! let noise_b = NoiseConfig::new(key_b, id_b, AuthMode::Mutual, trusted);
//!
//! let (tx_a, _rx_a) = crossbeam_channel::unbounded::<Inbound>();
//! let (tx_b, rx_b) = crossbeam_channel::unbounded::<Inbound>();
//! let a = Network::builder(id_a).noise(noise_a).handler(VOTES, tx_a).build()?;
//! let b = Network::builder(id_b).noise(noise_b).handler(VOTES, tx_b).build()?;
//! let addr = b.listen("127.0.0.1:0")?;
//! a.keep_connected(id_b, addr, public_b)?; // dialed now, and again whenever lost
//! a.wait_for_peer(PeerId::from_u64(2), Duration::from_secs(10))?;
//! for (peer, result) in a.broadcast(VOTES, Bytes::from_static(b"vote")) {
//!     result?;
//! }
//! let vote = rx_b.recv_timeout(Duration::from_secs(10))?;
//! assert_eq!(&vote.data()[..], b"vote");
//! let info = a.connection(id_b).expect("connected");
//! assert_eq!(info.authentication, Authentication::Noise { key: public_b, trust: Trust::Trusted });
//! let reports = a.shutdown();
//! assert!(reports.iter().all(|(_, r)| r.is_clean()));
//! # b.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod builder;
mod config;
mod dialer;
mod error;
mod event;
mod handshake;
mod health;
mod inner;
mod link;
mod listener;
mod monitor;
mod peer_id;
mod pending;
mod registry;
mod upgrade;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use parking_lot::Mutex;

pub use self::builder::NetworkBuilder;
pub use self::config::{HealthCheckConfig, NetworkConfig, ReconnectConfig};
pub use self::error::{BuildError, ConnectError, HandshakeError, KeepError, LinkError, WaitError};
pub use self::event::{
    Authentication, ConnectionId, ConnectionInfo, ConnectionOrigin, NetworkEvent,
};
pub use self::handshake::{ChainId, NetworkId, ProtocolIdSet};
pub use self::health::HEALTH_CHECK_PROTOCOL;
pub use self::link::Link;
pub use self::peer_id::ParsePeerIdError;

use self::dialer::{Command, Dialer, Target, resolve};
use self::inner::{Inner, thread_name};
use self::listener::Listener;
use self::monitor::Control;
use crate::error::TrySendError;
use crate::noise::{ConnectionSecurity, NoiseConfig, PublicKey};
use crate::peer::{DisconnectReason, DrainReport, PeerId, PeerMetrics, Receipt};
use crate::proto::ProtocolId;

/// The threads a shutdown stops, taken by the first call.
#[derive(Debug)]
struct Threads {
    monitor: JoinHandle<()>,
    dialer: Dialer,
}

/// This node's connections to its peers. See the [module docs](self).
///
/// All methods take `&self` and may be called from any thread; `Network` is `Send + Sync`,
/// to share through an `Arc`.
#[derive(Debug)]
pub struct Network {
    inner: Arc<Inner>,
    listeners: Mutex<Vec<Listener>>,
    threads: Mutex<Option<Threads>>,
}

impl Network {
    /// Starts describing the network of the node `local`.
    pub fn builder(local: PeerId) -> NetworkBuilder {
        NetworkBuilder::new(local)
    }

    /// This node's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local.peer_id
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.registry.lock().is_shutting_down()
    }

    /// Binds `addr` and accepts connections on a thread of its own until shutdown. Returns the
    /// bound address (use port 0 for any free port). May be called more than once.
    ///
    /// # Errors
    ///
    /// Binding or starting the thread failed; `NotConnected` if the network is shutting down.
    pub fn listen(&self, addr: impl ToSocketAddrs) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let mut listeners = self.listeners.lock();
        if self.is_shutting_down() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "network is shutting down",
            ));
        }
        let name = thread_name("lis", self.local_peer_id());
        let l = Listener::spawn(self.inner.clone(), listener, name)?;
        let addr = l.addr;
        listeners.push(l);
        Ok(addr)
    }

    /// Dials the node `peer` at `addr` over Noise (each address `addr` resolves to in turn,
    /// within `dial_timeout` each), upgrades the connection (within `handshake_timeout`) and
    /// registers it. The Noise handshake proves that the remote holds `key` (as Aptos dials a
    /// peer id with an address that names its key); `peer` is the id the connection is then
    /// known by. The dial runs on the network's dialer thread; the calling thread blocks until
    /// it is over: at most those timeouts (plus, if the network starts shutting down meanwhile,
    /// the new connection's drain, bounded by `linger`).
    ///
    /// Returns `peer` once it is connected: through this connection, or through another one
    /// that won a dial collision with it (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: the address did not resolve, no address answered, the upgrade was
    /// refused or timed out (the server does not hold `key`:
    /// [`HandshakeError::Noise`]; it refused us: [`HandshakeError::Closed`], which it counts),
    /// the peer was [already connected](ConnectError::AlreadyConnected) (its connection is
    /// left alone), the threads could not start, the network is shutting down, or it runs
    /// insecure plaintext ([`ConnectError::InsecureNetwork`]).
    pub fn connect(
        &self,
        addr: impl ToSocketAddrs,
        peer: PeerId,
        key: PublicKey,
    ) -> Result<PeerId, ConnectError> {
        if !self.is_noise() {
            return Err(ConnectError::InsecureNetwork);
        }
        self.dial(
            addr,
            Target {
                peer: Some(peer),
                key: Some(key),
            },
        )
    }

    /// Dials `addr` on a network that runs insecure plaintext, and takes whoever answers at
    /// its word: the remote's id is the one it sends. Otherwise as
    /// [`connect`](Network::connect), and returns the remote's id.
    ///
    /// # Errors
    ///
    /// As [`connect`](Network::connect); [`ConnectError::KeyRequired`] on a network that
    /// runs Noise.
    pub fn connect_insecure(&self, addr: impl ToSocketAddrs) -> Result<PeerId, ConnectError> {
        if self.is_noise() {
            return Err(ConnectError::KeyRequired);
        }
        self.dial(
            addr,
            Target {
                peer: None,
                key: None,
            },
        )
    }

    fn dial(&self, addr: impl ToSocketAddrs, target: Target) -> Result<PeerId, ConnectError> {
        if self.is_shutting_down() {
            return Err(ConnectError::ShuttingDown);
        }
        let addrs = resolve(addr).map_err(ConnectError::Resolve)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = Command::Connect {
            addrs,
            target,
            reply,
        };
        if !self.inner.dialer.send(command) {
            return Err(ConnectError::ShuttingDown);
        }
        // The dialer answers within the timeouts, or drops `reply` when it stops.
        answer.recv().unwrap_or(Err(ConnectError::ShuttingDown))
    }

    /// Keeps `peer`, reachable at `addr` and holding `key`, connected over Noise until
    /// shutdown or [`stop_keeping`](Network::stop_keeping): whenever it has no connection
    /// (none yet, or the last one ended, whatever the reason) the dialer thread dials it, and
    /// retries after each failure with the backoff of [`ReconnectConfig`]; each attempt is
    /// reported as [`NetworkEvent::Dialing`], each failure as [`NetworkEvent::DialFailed`].
    /// Naming a kept peer again replaces its addresses and key and restarts its backoff. Does
    /// not block: `addr` is resolved here, once.
    ///
    /// # Errors
    ///
    /// [`KeepError`]: the address did not resolve, `peer` is this node, the network is
    /// shutting down, or it runs insecure plaintext ([`KeepError::InsecureNetwork`]).
    pub fn keep_connected(
        &self,
        peer: PeerId,
        addr: impl ToSocketAddrs,
        key: PublicKey,
    ) -> Result<(), KeepError> {
        if !self.is_noise() {
            return Err(KeepError::InsecureNetwork);
        }
        self.keep(peer, addr, Some(key))
    }

    /// [`keep_connected`](Network::keep_connected) on a network that runs insecure
    /// plaintext: a dial that reaches another peer than `peer` fails
    /// ([`HandshakeError::UnexpectedPeer`]), but nothing proves that the remote is `peer`.
    ///
    /// # Errors
    ///
    /// As [`keep_connected`](Network::keep_connected); [`KeepError::KeyRequired`] on a
    /// network that runs Noise.
    pub fn keep_connected_insecure(
        &self,
        peer: PeerId,
        addr: impl ToSocketAddrs,
    ) -> Result<(), KeepError> {
        if self.is_noise() {
            return Err(KeepError::KeyRequired);
        }
        self.keep(peer, addr, None)
    }

    fn keep(
        &self,
        peer: PeerId,
        addr: impl ToSocketAddrs,
        key: Option<PublicKey>,
    ) -> Result<(), KeepError> {
        if peer == self.local_peer_id() {
            return Err(KeepError::LocalPeer);
        }
        if self.is_shutting_down() {
            return Err(KeepError::ShuttingDown);
        }
        let addrs = resolve(addr).map_err(KeepError::Resolve)?;
        if !self.inner.dialer.send(Command::Keep { peer, addrs, key }) {
            return Err(KeepError::ShuttingDown);
        }
        Ok(())
    }

    /// The Noise configuration every connection runs under, or `None` on a network that runs
    /// insecure plaintext. Its [`trusted_peers`](NoiseConfig::trusted_peers) can be updated
    /// while the network runs (the next handshakes see the change; connections up stay up),
    /// and its [`stats`](NoiseConfig::stats) count every handshake and transport outcome.
    pub fn noise_config(&self) -> Option<&NoiseConfig> {
        match &self.inner.local.security {
            ConnectionSecurity::Noise(config) => Some(config),
            ConnectionSecurity::InsecurePlaintext => None,
        }
    }

    fn is_noise(&self) -> bool {
        self.noise_config().is_some()
    }

    /// Stops redialing `peer`. Its connection, if any, stays up.
    pub fn stop_keeping(&self, peer: PeerId) {
        self.inner.dialer.send(Command::Forget(peer));
    }

    /// Blocks until `peer` is connected (at once if it is), at most `timeout`, and returns its
    /// link. Something else must make the connection: a [`keep_connected`] peer, a
    /// [`connect`](Network::connect) on another thread, or the remote dialing in.
    ///
    /// [`keep_connected`]: Network::keep_connected
    ///
    /// # Errors
    ///
    /// [`WaitError::TimedOut`], or [`WaitError::ShuttingDown`] once the network is shutting
    /// down.
    pub fn wait_for_peer(&self, peer: PeerId, timeout: Duration) -> Result<Link, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut registry = self.inner.registry.lock();
        loop {
            if let Some(c) = registry.live(&peer) {
                return Ok(c.link());
            }
            if registry.is_shutting_down() {
                return Err(WaitError::ShuttingDown);
            }
            if self
                .inner
                .changed
                .wait_until(&mut registry, deadline)
                .timed_out()
            {
                return registry
                    .live(&peer)
                    .map(|c| c.link())
                    .ok_or(WaitError::TimedOut);
            }
        }
    }

    /// The link to `peer`'s current connection, unless it is closing.
    pub fn peer(&self, peer: PeerId) -> Option<Link> {
        self.inner.registry.lock().live(&peer).map(|c| c.link())
    }

    /// The peers with a current connection that is not closing, in no particular order.
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner
            .registry
            .lock()
            .all_live()
            .map(|c| c.info.peer_id)
            .collect()
    }

    /// Who dialed `peer`'s current connection, its addresses and negotiated protocols.
    pub fn connection(&self, peer: PeerId) -> Option<ConnectionInfo> {
        self.inner
            .registry
            .lock()
            .live(&peer)
            .map(|c| c.info.clone())
    }

    /// A new subscription to the [`NetworkEvent`]s: it receives every event from this call
    /// on, independently of any other subscription. Unbounded (events are few: two or three
    /// per connection, and one or two per background dial), so a subscription nobody reads
    /// grows; drop the receiver to end it. It disconnects once the network has shut down and
    /// its last event was taken (at once if it already has).
    pub fn events(&self) -> Receiver<NetworkEvent> {
        self.inner.registry.lock().subscribe()
    }

    /// The counters of every connection this network has had, summed: the live ones as they
    /// stand, and each closed one as it ended (added once, when its threads have ended). So a
    /// service can export, for the whole node and however connections come and go, what was
    /// sent, written and abandoned, and what was received, delivered and dropped by cause
    /// ([`PeerMetrics::receive_drops`]). Also after [`shutdown`](Network::shutdown). Gauges
    /// (`outbox_depth`) are summed over the live connections.
    ///
    /// Each connection's counters are read one by one, not all at once (see
    /// [`PeerMetrics`]); once the network has shut down the totals are final.
    pub fn totals(&self) -> PeerMetrics {
        self.inner.registry.lock().totals()
    }

    /// Closes `peer`'s connection gracefully with `reason` and blocks until it has drained
    /// (bounded by `linger`). A connection waiting to replace it is closed too. The report
    /// also arrives as [`NetworkEvent::Disconnected`]. A kept peer is redialed afterwards:
    /// call [`stop_keeping`](Network::stop_keeping) first to keep it away.
    ///
    /// Returns `None` if the peer has no connection, or if called from an inline handler of
    /// that connection (the close is started, not waited for: see
    /// [`PeerHandle::join`](crate::PeerHandle::join)).
    pub fn disconnect(&self, peer: PeerId, reason: DisconnectReason) -> Option<DrainReport> {
        let conns = self.inner.registry.lock().of_peer(&peer);
        let (current, rest) = conns.split_first()?;
        current.handle.close(reason);
        for c in rest {
            c.handle.close(reason);
        }
        current.handle.join().ok()
    }

    /// Queues one message to every connected peer that negotiated `protocol`, without
    /// blocking, sharing `data`'s buffer (a `Bytes` clone is a reference count, not a copy).
    /// Returns each such peer's outcome; a refused message (`Full`, `Closed`) is handed back
    /// in the error.
    pub fn broadcast(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Vec<(PeerId, Result<(), TrySendError>)> {
        self.links_speaking(protocol)
            .into_iter()
            .map(|l| (l.peer_id(), l.handle().try_send(protocol, data.clone())))
            .collect()
    }

    /// Like [`broadcast`](Network::broadcast), with a [`Receipt`] per accepted message that
    /// resolves to written or abandoned: exact accounting of every message, still without
    /// blocking.
    pub fn broadcast_with_receipts(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Vec<(PeerId, Result<Receipt, TrySendError>)> {
        self.links_speaking(protocol)
            .into_iter()
            .map(|l| {
                let r = l.handle().try_send_with_receipt(protocol, data.clone());
                (l.peer_id(), r)
            })
            .collect()
    }

    /// Links are cloned under the lock and used after it, so a full outbox or a slow peer
    /// never holds the peer table.
    fn links_speaking(&self, protocol: ProtocolId) -> Vec<Link> {
        self.inner
            .registry
            .lock()
            .all_live()
            .filter(|c| c.info.protocols.contains(protocol))
            .map(|c| c.link())
            .collect()
    }

    /// Stops dialing and accepting, closes every connection gracefully and in parallel, joins
    /// every thread, and returns the report of each connection (a peer can appear twice if a
    /// replaced connection was still draining). Blocks for at most about `linger`. The same
    /// reports also arrive as events, after which every subscription disconnects.
    ///
    /// Only the first call does this and gets the reports; any other call (later, or while
    /// the first is under way) returns an empty list at once, without waiting. See the
    /// [module docs](self) for the thread that answers RPCs.
    pub fn shutdown(&self) -> Vec<(PeerId, DrainReport)> {
        let Some(threads) = self.threads.lock().take() else {
            return Vec::new();
        };
        let local = self.local_peer_id();
        log::debug!("network {local}: shutting down");
        let conns = self.inner.registry.lock().begin_shutdown();
        self.inner.changed.notify_all();
        threads.dialer.stop(&self.inner.dialer);
        for l in self.listeners.lock().drain(..) {
            l.stop();
        }
        for c in &conns {
            c.handle.close(DisconnectReason::RequestedByPeerManager);
        }
        let reports: Vec<_> = conns
            .iter()
            .filter_map(|c| Some((c.info.peer_id, c.handle.join().ok()?)))
            .collect();
        let _ = self.inner.control.send(Control::Stop);
        if threads.monitor.join().is_err() {
            log::error!("network {local}: monitor thread panicked");
        }
        self.inner.registry.lock().end_events();
        log::debug!(
            "network {local}: shut down, {} connections closed",
            reports.len()
        );
        reports
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shutdown();
    }
}
