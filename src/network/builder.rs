//! [`NetworkBuilder`]: what a network announces and serves, checked once, and the start of its
//! two threads (monitor and dialer).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Condvar, Mutex};

use super::config::NetworkConfig;
use super::dialer::{self, Dialer};
use super::error::BuildError;
use super::handshake::{HandshakeMsg, ProtocolIdSet};
use super::health::HEALTH_CHECK_PROTOCOL;
use super::inner::{Inner, thread_name};
use super::monitor::{Control, Monitor};
use super::registry::Registry;
use super::upgrade::Local;
use super::{Network, Threads};
use crate::config::PeerConfig;
use crate::noise::{ConnectionSecurity, NoiseConfig};
use crate::peer::{Handler, PeerId};
use crate::proto::ProtocolId;

/// Capacity of the channel carrying every peer's health-check requests to the monitor.
const HEALTH_REQUESTS_CAPACITY: usize = 1024;

/// Describes a network before it starts: see [`Network::builder`].
#[derive(Debug)]
pub struct NetworkBuilder {
    local: PeerId,
    handlers: Vec<(ProtocolId, Handler)>,
    protocols: ProtocolIdSet,
    peer_config: PeerConfig,
    config: NetworkConfig,
    security: Option<ConnectionSecurity>,
}

impl NetworkBuilder {
    pub(crate) fn new(local: PeerId) -> NetworkBuilder {
        NetworkBuilder {
            local,
            handlers: Vec::new(),
            protocols: ProtocolIdSet::new(),
            peer_config: PeerConfig::default(),
            config: NetworkConfig::default(),
            security: None,
        }
    }

    /// Routes inbound direct sends and RPC requests of `protocol`, from every peer, to
    /// `handler` (a crossbeam `Sender<Inbound>` or a [`keyed`](crate::keyed) sender keyed by
    /// `(PeerId, ProtocolId)`, which serves peers fairly). Also announces `protocol` in the
    /// handshake. A second handler for the same protocol replaces the first.
    pub fn handler(mut self, protocol: ProtocolId, handler: impl Into<Handler>) -> NetworkBuilder {
        self.handlers.retain(|(p, _)| *p != protocol);
        self.handlers.push((protocol, handler.into()));
        self.protocols.insert(protocol);
        self
    }

    /// Announces `protocol` in the handshake without a handler: for protocols this node only
    /// sends on (direct sends it never receives, RPCs it only calls). A protocol must be
    /// announced by both ends to be negotiated, and a [`Link`](super::Link) sends only on
    /// negotiated protocols. Messages on it that arrive here are dropped (no handler).
    pub fn protocol(mut self, protocol: ProtocolId) -> NetworkBuilder {
        self.protocols.insert(protocol);
        self
    }

    /// Runs every connection inside Noise IK, as Aptos does: the remote proves its static key
    /// (the dialer names it, the listener checks it against `config`'s trusted set as its
    /// [`AuthMode`](crate::noise::AuthMode) says), and every byte after the Noise handshake,
    /// the Aptos handshake included, is encrypted. `config`'s peer id must be this network's.
    /// The trusted set stays shared with `config` and its clones: update it while the network
    /// runs, and the next handshakes see the change.
    ///
    /// This, or [`insecure_plaintext`](NetworkBuilder::insecure_plaintext) by name, is
    /// required.
    pub fn noise(mut self, config: NoiseConfig) -> NetworkBuilder {
        self.security = Some(ConnectionSecurity::Noise(config));
        self
    }

    /// Runs every connection in plaintext, with a plain exchange of peer ids taken on trust:
    /// no authentication, no encryption. For tests, and for networks that are trusted or
    /// tunnelled already.
    pub fn insecure_plaintext(mut self) -> NetworkBuilder {
        self.security = Some(ConnectionSecurity::InsecurePlaintext);
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

    /// Validates the configuration and starts the monitor and dialer threads. Call
    /// [`listen`](Network::listen), [`connect`](Network::connect) and
    /// [`keep_connected`](Network::keep_connected) next.
    ///
    /// # Errors
    ///
    /// [`BuildError`]: a configuration out of range, a handler on
    /// [`HEALTH_CHECK_PROTOCOL`], no security chosen, a Noise configuration for another peer,
    /// or a thread could not start.
    pub fn build(mut self) -> Result<Network, BuildError> {
        let security = self.security.take().ok_or(BuildError::NoSecurity)?;
        if let ConnectionSecurity::Noise(noise) = &security
            && noise.peer_id() != self.local
        {
            return Err(BuildError::PeerIdMismatch {
                network: self.local,
                noise: noise.peer_id(),
            });
        }
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
        let handshake =
            HandshakeMsg::v1(self.protocols, self.config.chain_id, self.config.network_id);
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let (health_tx, health_rx) = crossbeam_channel::bounded(HEALTH_REQUESTS_CAPACITY);
        let (dialer, dialer_parts) = dialer::prepare().map_err(BuildError::Spawn)?;
        let inner = Arc::new(Inner {
            local: Arc::new(Local::new(self.local, handshake, security)),
            handlers: self.handlers,
            peer_config: self.peer_config,
            config: self.config,
            registry: Mutex::new(Registry::new(self.local)),
            changed: Condvar::new(),
            control: control_tx,
            health_tx,
            dialer,
            next_id: AtomicU64::new(0),
        });
        let monitor = Monitor::new(inner.clone(), control_rx, health_rx);
        let monitor = std::thread::Builder::new()
            .name(thread_name("mon", self.local))
            .stack_size(256 * 1024)
            .spawn(move || monitor.run())
            .map_err(BuildError::Spawn)?;
        let dialer =
            match Dialer::spawn(inner.clone(), dialer_parts, thread_name("dia", self.local)) {
                Ok(d) => d,
                Err(e) => {
                    let _ = inner.control.send(Control::Stop);
                    let _ = monitor.join();
                    return Err(BuildError::Spawn(e));
                }
            };
        Ok(Network {
            inner,
            listeners: Mutex::new(Vec::new()),
            threads: Mutex::new(Some(Threads { monitor, dialer })),
        })
    }
}
