//! [`Link`]: what the network hands out for a peer's current connection. It is the
//! connection's [`PeerHandle`] together with what the handshake settled, and it checks every
//! send and RPC against the negotiated protocols, so one on a protocol the remote does not
//! speak fails at once ([`LinkError::NotNegotiated`]) instead of being dropped at the remote
//! (a direct send) or waiting for its timeout (an RPC).

use std::time::Duration;

use bytes::Bytes;

use super::error::LinkError;
use super::event::ConnectionInfo;
use super::handshake::ProtocolIdSet;
use crate::error::{RpcError, SendError, SendTimeoutError, TrySendError};
use crate::peer::{PeerHandle, PeerId, PeerMetrics, PendingRpc, Receipt};
use crate::proto::ProtocolId;

/// A peer's connection as the network sees it: its handle, checked against the protocols
/// both ends announced. Cheap to clone, `Send + Sync`; a clone keeps the connection open as a
/// [`PeerHandle`] does. Each method below blocks as the [`PeerHandle`] method of the same name.
#[derive(Clone, Debug)]
pub struct Link {
    handle: PeerHandle,
    info: ConnectionInfo,
}

impl Link {
    pub(crate) fn new(handle: PeerHandle, info: ConnectionInfo) -> Link {
        Link { handle, info }
    }

    /// The remote's id.
    pub fn peer_id(&self) -> PeerId {
        self.info.peer_id
    }

    /// Which connection this is: id, who dialed, addresses, negotiated protocols.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The protocols negotiated in the handshake.
    pub fn protocols(&self) -> &ProtocolIdSet {
        &self.info.protocols
    }

    /// The connection's handle, for what a link does not repeat (`close`, `shutdown`,
    /// `join`, `abort`). Its sends are not checked against the negotiated protocols.
    pub fn handle(&self) -> &PeerHandle {
        &self.handle
    }

    /// True once the connection's close has started.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// The connection's counters.
    pub fn metrics(&self) -> PeerMetrics {
        self.handle.metrics()
    }

    fn check<E>(&self, protocol: ProtocolId, data: Bytes) -> Result<Bytes, LinkError<E>> {
        if self.info.protocols.contains(protocol) {
            Ok(data)
        } else {
            Err(LinkError::NotNegotiated { protocol, data })
        }
    }

    /// [`PeerHandle::send`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`], or the connection's [`SendError`].
    pub fn send(&self, protocol: ProtocolId, data: Bytes) -> Result<(), LinkError<SendError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.send(protocol, data)?)
    }

    /// [`PeerHandle::try_send`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`], or the connection's [`TrySendError`].
    pub fn try_send(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<(), LinkError<TrySendError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.try_send(protocol, data)?)
    }

    /// [`PeerHandle::send_timeout`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`], or the connection's [`SendTimeoutError`].
    pub fn send_timeout(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<(), LinkError<SendTimeoutError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.send_timeout(protocol, data, timeout)?)
    }

    /// [`PeerHandle::send_with_receipt`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`], or the connection's [`SendError`].
    pub fn send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, LinkError<SendError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.send_with_receipt(protocol, data)?)
    }

    /// [`PeerHandle::try_send_with_receipt`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`], or the connection's [`TrySendError`].
    pub fn try_send_with_receipt(
        &self,
        protocol: ProtocolId,
        data: Bytes,
    ) -> Result<Receipt, LinkError<TrySendError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.try_send_with_receipt(protocol, data)?)
    }

    /// [`PeerHandle::rpc`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// [`LinkError::NotNegotiated`] (the request is handed back), or the connection's
    /// [`RpcError`].
    pub fn rpc(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, LinkError<RpcError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.rpc(protocol, data, timeout)?)
    }

    /// [`PeerHandle::rpc_start`], if `protocol` was negotiated.
    ///
    /// # Errors
    ///
    /// As [`rpc`](Link::rpc).
    pub fn rpc_start(
        &self,
        protocol: ProtocolId,
        data: Bytes,
        timeout: Duration,
    ) -> Result<PendingRpc, LinkError<RpcError>> {
        let data = self.check(protocol, data)?;
        Ok(self.handle.rpc_start(protocol, data, timeout)?)
    }
}
