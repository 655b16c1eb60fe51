//! The state a network's handle and threads share ([`Inner`]), and the admission of an
//! upgraded connection: spawning its peer and placing it in the peer table.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::config::NetworkConfig;
use super::dialer::DialerHandle;
use super::error::{ConnectError, HandshakeError};
use super::event::{ConnectionId, ConnectionInfo, ConnectionOrigin, NetworkEvent};
use super::health::HEALTH_CHECK_PROTOCOL;
use super::monitor::{Control, Watched};
use super::registry::{Conn, Placement, Registry};
use super::upgrade::{Local, Upgraded};
use crate::config::PeerConfig;
use crate::noise::{NoiseReader, NoiseWriter};
use crate::peer::{DisconnectReason, Handler, Inbound, Peer, PeerId};
use crate::proto::ProtocolId;

/// State shared by the network's handle and threads.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) local: Arc<Local>,
    pub(crate) handlers: Vec<(ProtocolId, Handler)>,
    pub(crate) peer_config: PeerConfig,
    pub(crate) config: NetworkConfig,
    pub(crate) registry: Mutex<Registry>,
    /// Notified whenever the peer table changes (and at shutdown): `wait_for_peer` waits here.
    pub(crate) changed: Condvar,
    pub(crate) control: Sender<Control>,
    pub(crate) health_tx: Sender<Inbound>,
    pub(crate) dialer: DialerHandle,
    pub(crate) next_id: AtomicU64,
}

/// A thread name for `role` (three letters) of the node `local`: `sp-mon-0000000a`, 15 bytes,
/// the most Linux keeps.
pub(crate) fn thread_name(role: &str, local: PeerId) -> String {
    format!("sp-{role}-{local}")
}

impl Inner {
    /// Sends `event` to every subscriber.
    pub(crate) fn emit(&self, event: NetworkEvent) {
        self.registry.lock().emit(event);
    }

    /// A seed for the network's random numbers (ping nonces, jitter): not secret, only varied.
    pub(crate) fn seed(&self) -> u64 {
        let id = &self.local.peer_id.0;
        u64::from_le_bytes(id[24..].try_into().unwrap_or([0; 8]))
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
    }

    /// Spawns the peer for an upgraded connection and places it in the peer table. Returns
    /// the remote's id, also when the connection lost a dial collision (the peer is connected
    /// through the other one).
    pub(crate) fn admit(
        &self,
        stream: TcpStream,
        upgraded: Upgraded,
        noise: Option<(NoiseWriter, NoiseReader)>,
        origin: ConnectionOrigin,
    ) -> Result<PeerId, ConnectError> {
        let local = self.local.peer_id;
        let peer_id = upgraded.remote;
        let local_addr = stream.local_addr().map_err(HandshakeError::Io)?;
        let remote_addr = stream.peer_addr().map_err(HandshakeError::Io)?;
        let (notice_tx, notices) = crossbeam_channel::bounded(1);
        let mut builder = Peer::builder(stream)
            .config(self.peer_config.clone())
            .remote_peer_id(peer_id)
            .handler(HEALTH_CHECK_PROTOCOL, self.health_tx.clone())
            .on_disconnect(notice_tx);
        if let Some((writer, reader)) = noise {
            builder = builder.noise_halves(writer, reader);
        }
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
            protocols: upgraded.protocols,
            authentication: upgraded.authentication,
        };
        let conn = Conn {
            info,
            handle: handle.clone(),
            admitted: std::time::Instant::now(),
        };
        let mut registry = self.registry.lock();
        let placed = registry.place(conn);
        self.changed.notify_all();
        match placed {
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
                    "network {local}: {id} to peer {peer_id} ({origin:?}, {remote_addr}): {}",
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
                // Whatever it received counts in the totals too.
                self.registry.lock().add_closed(&conn.handle.metrics());
                Err(ConnectError::ShuttingDown)
            }
        }
    }
}
