//! A [`Network`]: this node's set of peer connections over TCP. It accepts and dials
//! connections, runs a small handshake on each (`handshake.rs`), keeps at most one connection
//! per peer (`registry.rs`), shares one set of handlers between all peers, broadcasts, checks
//! every peer's health and reports each connection's end with its [`DrainReport`].
//!
//! ```text
//!  listen ─▶ [syncpeer-listener: mio Poll over listener + handshakes + Waker] ─┐
//!  connect (caller's thread: dial, handshake) ────────────────────────────────┤ admit: spawn
//!                                                                              ▼ the Peer
//!  peer(id) / broadcast / disconnect ◀── [peer table: one current connection per peer]
//!                                              ▲ events (Connected / Disconnected / Replaced)
//!  [syncpeer-monitor: Select over notices, pings, pongs, the next round] ─┘
//! ```
//!
//! Threads: one listener per `listen`, one monitor, and each connection's three. Nothing else:
//! inbound handshakes are driven by the listener's poll, outbound ones by the caller of
//! `connect`.
//!
//! # Shutdown
//!
//! [`Network::shutdown`] first refuses new connections (the peer table is marked, so a
//! handshake finishing meanwhile is closed rather than registered), stops and joins the
//! listeners, then starts a graceful close of every connection at once (each drains in its
//! own threads, in parallel), waits for each to finish and collects the reports, and last
//! stops and joins the monitor, which by then has every `Disconnected` notice queued and turns
//! them into events. Dropping a `Network` does the same and discards the reports.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use syncpeer::network::{Network, NetworkEvent};
//! use syncpeer::{Bytes, Inbound, PeerId, ProtocolId};
//!
//! const VOTES: ProtocolId = ProtocolId(1);
//! let (tx_a, _rx_a) = crossbeam_channel::unbounded::<Inbound>();
//! let (tx_b, rx_b) = crossbeam_channel::unbounded::<Inbound>();
//! let a = Network::builder(PeerId::from_u64(1)).handler(VOTES, tx_a).build()?;
//! let b = Network::builder(PeerId::from_u64(2)).handler(VOTES, tx_b).build()?;
//! let addr = b.listen("127.0.0.1:0")?;
//! assert_eq!(a.connect(addr)?, PeerId::from_u64(2));
//! for (peer, result) in a.broadcast(VOTES, Bytes::from_static(b"vote")) {
//!     result?;
//! }
//! let vote = rx_b.recv_timeout(Duration::from_secs(10))?;
//! assert_eq!(&vote.data()[..], b"vote");
//! let reports = a.shutdown();
//! assert!(reports.iter().all(|(_, r)| r.is_clean()));
//! # b.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
mod event;
mod handshake;
mod health;
mod listener;
mod monitor;
mod registry;

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

pub use self::config::{HealthCheckConfig, NetworkConfig};
pub use self::error::{BuildError, ConnectError, HandshakeError};
pub use self::event::{ConnectionId, ConnectionInfo, ConnectionOrigin, NetworkEvent};
pub use self::health::HEALTH_CHECK_PROTOCOL;

use self::handshake::{Hello, ProtocolSet};
use self::listener::Listener;
use self::monitor::{Control, Monitor, Watched};
use self::registry::{Conn, Placement, Registry};
use crate::config::PeerConfig;
use crate::error::TrySendError;
use crate::peer::{
    DisconnectReason, DrainReport, Handler, Inbound, Peer, PeerHandle, PeerId, Receipt,
};
use crate::proto::ProtocolId;

/// Capacity of the channel carrying every peer's health-check requests to the monitor.
const HEALTH_REQUESTS_CAPACITY: usize = 1024;

/// Describes a network before it starts: see [`Network::builder`].
#[derive(Debug)]
pub struct NetworkBuilder {
    local: PeerId,
    handlers: Vec<(ProtocolId, Handler)>,
    protocols: ProtocolSet,
    peer_config: PeerConfig,
    config: NetworkConfig,
}

impl NetworkBuilder {
    /// Routes inbound direct sends and RPC requests of `protocol`, from every peer, to
    /// `handler` (a crossbeam `Sender<Inbound>` or a [`keyed`](crate::keyed) sender keyed by
    /// `(PeerId, ProtocolId)`, which serves peers fairly). Also advertises `protocol` in the
    /// handshake. A second handler for the same protocol replaces the first.
    pub fn handler(mut self, protocol: ProtocolId, handler: impl Into<Handler>) -> NetworkBuilder {
        self.handlers.retain(|(p, _)| *p != protocol);
        self.handlers.push((protocol, handler.into()));
        self.protocols.insert(protocol);
        self
    }

    /// Advertises `protocol` in the handshake without a handler: for protocols this node only
    /// sends on (direct sends it never receives, RPCs it only calls).
    pub fn protocol(mut self, protocol: ProtocolId) -> NetworkBuilder {
        self.protocols.insert(protocol);
        self
    }

    /// Sets the configuration of every connection (default: [`PeerConfig::default`]).
    pub fn peer_config(mut self, config: PeerConfig) -> NetworkBuilder {
        self.peer_config = config;
        self
    }

    /// Sets the network's own configuration (default: [`NetworkConfig::default`]).
    pub fn config(mut self, config: NetworkConfig) -> NetworkBuilder {
        self.config = config;
        self
    }

    /// Validates the configuration and starts the monitor thread. Call
    /// [`listen`](Network::listen) and [`connect`](Network::connect) next.
    ///
    /// # Errors
    ///
    /// [`BuildError`]: a configuration out of range, a handler on
    /// [`HEALTH_CHECK_PROTOCOL`], or the thread could not start.
    pub fn build(mut self) -> Result<Network, BuildError> {
        self.peer_config
            .validate()
            .map_err(BuildError::PeerConfig)?;
        self.config.validate()?;
        if self
            .handlers
            .iter()
            .any(|(p, _)| *p == HEALTH_CHECK_PROTOCOL)
        {
            return Err(BuildError::ReservedProtocol(HEALTH_CHECK_PROTOCOL));
        }
        self.protocols.insert(HEALTH_CHECK_PROTOCOL);
        let (events_tx, events) = crossbeam_channel::unbounded();
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let (health_tx, health_rx) = crossbeam_channel::bounded(HEALTH_REQUESTS_CAPACITY);
        let inner = Arc::new(Inner {
            local: Hello {
                peer_id: self.local,
                protocols: self.protocols,
            },
            handlers: self.handlers,
            peer_config: self.peer_config,
            config: self.config,
            registry: Mutex::new(Registry::new(self.local, events_tx)),
            control: control_tx,
            health_tx,
            answer_pings: AtomicBool::new(true),
            next_id: AtomicU64::new(0),
        });
        let monitor = Monitor::new(inner.clone(), control_rx, health_rx);
        let monitor = std::thread::Builder::new()
            .name("syncpeer-monitor".into())
            .stack_size(256 * 1024)
            .spawn(move || monitor.run())
            .map_err(BuildError::Spawn)?;
        Ok(Network {
            inner,
            listeners: Mutex::new(Vec::new()),
            monitor: Some(monitor),
            events,
        })
    }
}

/// State shared by the network's handle and threads.
#[derive(Debug)]
pub(crate) struct Inner {
    local: Hello,
    handlers: Vec<(ProtocolId, Handler)>,
    peer_config: PeerConfig,
    config: NetworkConfig,
    registry: Mutex<Registry>,
    control: Sender<Control>,
    health_tx: Sender<Inbound>,
    answer_pings: AtomicBool,
    next_id: AtomicU64,
}

impl Inner {
    /// Spawns the peer for a connection whose handshake succeeded and places it in the peer
    /// table. Returns the remote's id, also when the connection lost a dial collision (the
    /// peer is connected through the other one).
    fn admit(
        &self,
        stream: TcpStream,
        remote: Hello,
        origin: ConnectionOrigin,
    ) -> Result<PeerId, ConnectError> {
        let peer_id = remote.peer_id;
        let local_addr = stream.local_addr().map_err(HandshakeError::Io)?;
        let remote_addr = stream.peer_addr().map_err(HandshakeError::Io)?;
        let (notice_tx, notices) = crossbeam_channel::bounded(1);
        let mut builder = Peer::builder(stream)
            .config(self.peer_config.clone())
            .remote_peer_id(peer_id)
            .handler(HEALTH_CHECK_PROTOCOL, self.health_tx.clone())
            .on_disconnect(notice_tx);
        for (p, h) in &self.handlers {
            builder = builder.handler(*p, h.clone());
        }
        let handle = builder.spawn().map_err(ConnectError::Spawn)?;
        let id = ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let info = ConnectionInfo {
            id,
            peer_id,
            origin,
            local_addr,
            remote_addr,
        };
        let conn = Conn {
            info,
            handle: handle.clone(),
        };
        let mut registry = self.registry.lock();
        match registry.place(conn) {
            Ok(placement) => {
                // Sent under the lock, so it is queued before shutdown's `Stop`.
                let _ = self.control.send(Control::Watch(Watched {
                    id,
                    peer_id,
                    handle,
                    notices,
                }));
                drop(registry);
                log::debug!(
                    "network {}: {id} to {peer_id} ({origin:?}, {remote_addr}): {}",
                    self.local.peer_id,
                    match placement {
                        Placement::Current => "connected",
                        Placement::Pending => "waiting for the previous connection to close",
                        Placement::Lost => "lost a dial collision, closing",
                    }
                );
                Ok(peer_id)
            }
            Err(conn) => {
                drop(registry);
                // Not on one of its threads: the connection was only just spawned.
                let _ = conn
                    .handle
                    .shutdown(DisconnectReason::RequestedByPeerManager);
                Err(ConnectError::ShuttingDown)
            }
        }
    }
}

/// This node's connections to its peers. See the [module docs](self).
///
/// All methods take `&self` and may be called from any thread; `Network` is `Send + Sync`.
#[derive(Debug)]
pub struct Network {
    inner: Arc<Inner>,
    listeners: Mutex<Vec<Listener>>,
    monitor: Option<JoinHandle<()>>,
    events: Receiver<NetworkEvent>,
}

impl Network {
    /// Starts describing the network of the node `local`.
    pub fn builder(local: PeerId) -> NetworkBuilder {
        NetworkBuilder {
            local,
            handlers: Vec::new(),
            protocols: ProtocolSet::default(),
            peer_config: PeerConfig::default(),
            config: NetworkConfig::default(),
        }
    }

    /// This node's id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local.peer_id
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
        if self.inner.registry.lock().is_shutting_down() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "network is shutting down",
            ));
        }
        let l = Listener::spawn(self.inner.clone(), listener)?;
        let addr = l.addr;
        listeners.push(l);
        Ok(addr)
    }

    /// Dials `addr` (within `dial_timeout`), runs the handshake (within `handshake_timeout`)
    /// and registers the connection. Blocks the calling thread for at most those two
    /// timeouts (plus, if the network starts shutting down meanwhile, the new connection's
    /// drain, bounded by `linger`).
    ///
    /// Returns the remote's id once the peer is connected: through this connection, or
    /// through another one that won a dial collision with it (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// [`ConnectError`]: the dial failed or timed out, the handshake was refused or timed out,
    /// the threads could not start, or the network is shutting down.
    pub fn connect(&self, addr: SocketAddr) -> Result<PeerId, ConnectError> {
        if self.inner.registry.lock().is_shutting_down() {
            return Err(ConnectError::ShuttingDown);
        }
        let stream = TcpStream::connect_timeout(&addr, self.inner.config.dial_timeout)
            .map_err(ConnectError::Dial)?;
        stream.set_nodelay(true).map_err(HandshakeError::Io)?;
        let deadline = Instant::now() + self.inner.config.handshake_timeout;
        let remote =
            handshake::exchange(&stream, &self.inner.local, HEALTH_CHECK_PROTOCOL, deadline)
                .inspect_err(|e| log::warn!("handshake with {addr} failed: {e}"))?;
        self.inner.admit(stream, remote, ConnectionOrigin::Outbound)
    }

    /// The handle of `peer`'s current connection, unless it is closing.
    pub fn peer(&self, peer: PeerId) -> Option<PeerHandle> {
        self.inner
            .registry
            .lock()
            .live(&peer)
            .map(|c| c.handle.clone())
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

    /// Who dialed `peer`'s current connection, and its addresses.
    pub fn connection(&self, peer: PeerId) -> Option<ConnectionInfo> {
        self.inner
            .registry
            .lock()
            .live(&peer)
            .map(|c| c.info.clone())
    }

    /// The channel of [`NetworkEvent`]s. It is unbounded (events are few: two or three per
    /// connection); every call returns a clone of the same receiver, so receivers compete.
    /// It disconnects once the network has shut down and its last event was taken.
    pub fn events(&self) -> Receiver<NetworkEvent> {
        self.events.clone()
    }

    /// Closes `peer`'s connection gracefully with `reason` and blocks until it has drained
    /// (bounded by `linger`). A connection waiting to replace it is closed too. The report
    /// also arrives as [`NetworkEvent::Disconnected`].
    ///
    /// Returns `None` if the peer has no connection, or if called from an inline handler of
    /// that connection (the close is started, not waited for: see [`PeerHandle::join`]).
    pub fn disconnect(&self, peer: PeerId, reason: DisconnectReason) -> Option<DrainReport> {
        let conns = self.inner.registry.lock().of_peer(&peer);
        let (current, rest) = conns.split_first()?;
        current.handle.close(reason);
        for c in rest {
            c.handle.close(reason);
        }
        current.handle.join().ok()
    }

    /// Queues one message to every connected peer without blocking, sharing `data`'s buffer
    /// (a `Bytes` clone is a reference count, not a copy). Returns each peer's outcome; a
    /// refused message (`Full`, `Closed`) is handed back in the error.
    pub fn broadcast(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Vec<(PeerId, Result<(), TrySendError>)> {
        self.live_handles()
            .into_iter()
            .map(|(p, h)| (p, h.try_send(protocol, data.clone())))
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
        self.live_handles()
            .into_iter()
            .map(|(p, h)| (p, h.try_send_with_receipt(protocol, data.clone())))
            .collect()
    }

    /// Handles are cloned under the lock and used after it, so a full outbox or a slow peer
    /// never holds the peer table.
    fn live_handles(&self) -> Vec<(PeerId, PeerHandle)> {
        self.inner
            .registry
            .lock()
            .all_live()
            .map(|c| (c.info.peer_id, c.handle.clone()))
            .collect()
    }

    /// Fault injection: while `false`, health-check pings from remotes are left unanswered,
    /// so their health checkers will eventually disconnect this node. Default `true`.
    pub fn set_answer_pings(&self, answer: bool) {
        self.inner.answer_pings.store(answer, Ordering::Relaxed);
    }

    /// Stops accepting, closes every connection gracefully and in parallel, joins every
    /// thread, and returns the report of each connection (a peer can appear twice if a
    /// replaced connection was still draining). Blocks for at most about `linger`. The same
    /// reports also arrive as events, after which the event channel disconnects.
    pub fn shutdown(mut self) -> Vec<(PeerId, DrainReport)> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Vec<(PeerId, DrainReport)> {
        let Some(monitor) = self.monitor.take() else {
            return Vec::new();
        };
        let local = self.inner.local.peer_id;
        log::debug!("network {local}: shutting down");
        let conns = self.inner.registry.lock().begin_shutdown();
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
        if monitor.join().is_err() {
            log::error!("network {local}: monitor thread panicked");
        }
        log::debug!(
            "network {local}: shut down, {} connections closed",
            reports.len()
        );
        reports
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shutdown_inner();
    }
}
