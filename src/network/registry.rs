//! The peer table: at most one current connection per peer, the rule that settles a second
//! connection to the same peer (a dial collision), and the events that follow from both,
//! fanned out to every subscriber. It lives behind the network's mutex; every event is sent
//! while that lock is held, so events come out in the order the table changed, and a
//! subscription taken under the lock sees every later event.
//!
//! # One connection per peer
//!
//! Each peer has a slot holding:
//! - `current`: the connection `Network::peer` hands out (while it is not closing);
//! - `pending`: a connection that arrived while `current` was closing. It runs (its inbound
//!   messages are delivered) but nobody can send on it; it becomes current, with a
//!   `Connected` event, right after `current`'s `Disconnected`. This keeps `Connected` and
//!   `Disconnected` alternating per peer;
//! - `closing`: connections that lost a collision and are draining. One that had been current
//!   (the application may have sent on it) ends with a `Replaced` event; one that never was
//!   ends silently.
//!
//! # Dial collisions
//!
//! When a new connection meets a live current one (or a live pending one), [`keeps_new`]
//! decides, as the original's `PeerManager` does: if both were dialed by the same side, the
//! newer one wins (the dialer evidently wants a fresh connection, e.g. after a restart);
//! otherwise the one dialed by the node with the larger `PeerId` wins. Both ends apply the
//! same rule to the same two connections, so in a simultaneous dial (A dials B while B dials
//! A) both keep the connection dialed by the larger id, whichever arrived first at each end.
//! The loser is closed gracefully with `StaleConnection`: whatever either side accepted on it
//! is written and read before it goes.
//!
//! # Totals
//!
//! The table also keeps the counters of the connections that have left it, summed as each
//! leaves (its threads have ended, so its counters are final). [`Registry::totals`] adds the
//! connections still in it: every connection the network ever admitted is counted exactly
//! once, under the same lock that moves it out.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::event::{ConnectionId, ConnectionInfo, ConnectionOrigin, NetworkEvent};
use super::link::Link;
use crate::peer::{DisconnectReason, DrainReport, PeerHandle, PeerId, PeerMetrics};

/// One spawned connection.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) info: ConnectionInfo,
    pub(crate) handle: PeerHandle,
    /// When it was placed in the table.
    pub(crate) admitted: Instant,
}

impl Conn {
    fn is_live(&self) -> bool {
        !self.handle.is_closed()
    }

    pub(crate) fn link(&self) -> Link {
        Link::new(self.handle.clone(), self.info.clone())
    }
}

/// Whether a closing connection owes the application an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exposure {
    /// It was current: its end is reported as `Replaced`.
    WasCurrent,
    /// Nobody could send on it: it ends silently.
    Never,
}

#[derive(Debug, Default)]
struct Slot {
    current: Option<Conn>,
    pending: Option<Conn>,
    closing: Vec<(Conn, Exposure)>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.current.is_none() && self.pending.is_none() && self.closing.is_empty()
    }
}

/// Where [`Registry::place`] put a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// It is the peer's current connection.
    Current,
    /// It waits for the current one to finish closing.
    Pending,
    /// It lost a dial collision and is closing.
    Lost,
}

/// True if a `new` connection should replace a live `existing` one to the same `remote`.
pub(crate) fn keeps_new(
    local: PeerId,
    remote: PeerId,
    existing: ConnectionOrigin,
    new: ConnectionOrigin,
) -> bool {
    use ConnectionOrigin::{Inbound, Outbound};
    match (existing, new) {
        // Same dialer: the newer connection wins.
        (Inbound, Inbound) | (Outbound, Outbound) => true,
        // The new one was dialed by us: keep it if we are the larger.
        (Inbound, Outbound) => local > remote,
        // The new one was dialed by the remote: keep it if the remote is the larger.
        (Outbound, Inbound) => remote > local,
    }
}

#[derive(Debug)]
pub(crate) struct Registry {
    local: PeerId,
    slots: HashMap<PeerId, Slot>,
    shutting_down: bool,
    /// One sender per `Network::events` call; `None` once the network has shut down.
    subscribers: Option<Vec<Sender<NetworkEvent>>>,
    /// The final counters of every connection that has left the table, summed.
    closed_totals: PeerMetrics,
}

impl Registry {
    pub(crate) fn new(local: PeerId) -> Registry {
        Registry {
            local,
            slots: HashMap::new(),
            shutting_down: false,
            subscribers: Some(Vec::new()),
            closed_totals: PeerMetrics::default(),
        }
    }

    /// A new subscription: every event from now on. Disconnected at once if the network has
    /// shut down.
    pub(crate) fn subscribe(&mut self) -> Receiver<NetworkEvent> {
        let (tx, rx) = crossbeam_channel::unbounded();
        if let Some(subs) = &mut self.subscribers {
            subs.push(tx);
        }
        rx
    }

    /// Drops every subscription's sender: each receiver disconnects after its last event.
    pub(crate) fn end_events(&mut self) {
        self.subscribers = None;
    }

    /// Sends `event` to every subscriber. Unbounded: never blocks. A subscriber whose
    /// receiver was dropped is forgotten.
    pub(crate) fn emit(&mut self, event: NetworkEvent) {
        if let Some(subs) = &mut self.subscribers {
            subs.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    /// Places a freshly spawned connection, closing whichever connection loses a collision.
    /// Hands the connection back if the network is shutting down.
    pub(crate) fn place(&mut self, conn: Conn) -> Result<Placement, Box<Conn>> {
        if self.shutting_down {
            return Err(Box::new(conn));
        }
        let local = self.local;
        let peer = conn.info.peer_id;
        let slot = self.slots.entry(peer).or_default();
        let stale = DisconnectReason::StaleConnection;
        // A current connection replaced by a newer one: the peer stays connected, no event.
        let mut replaced = false;
        let placement = match slot.current.take() {
            None => {
                slot.current = Some(conn);
                Placement::Current
            }
            Some(cur) if !cur.is_live() => {
                slot.current = Some(cur);
                match slot.pending.take() {
                    Some(p)
                        if p.is_live()
                            && !keeps_new(local, peer, p.info.origin, conn.info.origin) =>
                    {
                        slot.pending = Some(p);
                        conn.handle.close(stale);
                        slot.closing.push((conn, Exposure::Never));
                        Placement::Lost
                    }
                    old => {
                        if let Some(p) = old {
                            p.handle.close(stale);
                            slot.closing.push((p, Exposure::Never));
                        }
                        slot.pending = Some(conn);
                        Placement::Pending
                    }
                }
            }
            Some(cur) => {
                if keeps_new(local, peer, cur.info.origin, conn.info.origin) {
                    replaced = true;
                    cur.handle.close(stale);
                    slot.closing.push((cur, Exposure::WasCurrent));
                    slot.current = Some(conn);
                    Placement::Current
                } else {
                    slot.current = Some(cur);
                    conn.handle.close(stale);
                    slot.closing.push((conn, Exposure::Never));
                    Placement::Lost
                }
            }
        };
        if placement == Placement::Current && !replaced {
            self.emit(NetworkEvent::Connected(peer));
        }
        Ok(placement)
    }

    /// A connection's threads have ended: update the slot and tell the application.
    pub(crate) fn closed(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        reason: DisconnectReason,
        report: DrainReport,
    ) {
        let Some(slot) = self.slots.get_mut(&peer) else {
            return;
        };
        let mut events = Vec::new();
        let gone = if slot.current.as_ref().is_some_and(|c| c.info.id == id) {
            let gone = slot.current.take();
            events.push(NetworkEvent::Disconnected {
                peer_id: peer,
                reason,
                report,
            });
            if let Some(p) = slot.pending.take() {
                if p.is_live() {
                    slot.current = Some(p);
                    events.push(NetworkEvent::Connected(peer));
                } else {
                    slot.closing.push((p, Exposure::Never));
                }
            }
            gone
        } else if slot.pending.as_ref().is_some_and(|c| c.info.id == id) {
            slot.pending.take()
        } else if let Some(i) = slot.closing.iter().position(|(c, _)| c.info.id == id) {
            let (gone, exposure) = slot.closing.swap_remove(i);
            if exposure == Exposure::WasCurrent {
                events.push(NetworkEvent::Replaced {
                    peer_id: peer,
                    report,
                });
            }
            Some(gone)
        } else {
            None
        };
        if let Some(c) = gone {
            self.closed_totals += &c.handle.metrics();
        }
        if slot.is_empty() {
            self.slots.remove(&peer);
        }
        for e in events {
            self.emit(e);
        }
    }

    /// True if the peer has a live current or pending connection: a dial to it is not needed.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected_before(peer, None)
    }

    /// True if the peer has a live current or pending connection admitted before `t` (if
    /// given). A dial started at `t` that reaches a peer connected before it is not wanted
    /// (the original answers "already connected" when the dial is requested); one that
    /// reaches a peer connected since is a simultaneous dial, for the tie-break to settle.
    pub(crate) fn connected_before(&self, peer: &PeerId, t: Option<Instant>) -> bool {
        self.slots.get(peer).is_some_and(|s| {
            s.current
                .iter()
                .chain(&s.pending)
                .any(|c| c.is_live() && t.is_none_or(|t| c.admitted <= t))
        })
    }

    /// The peer's current connection, if it is not closing.
    pub(crate) fn live(&self, peer: &PeerId) -> Option<&Conn> {
        self.slots
            .get(peer)
            .and_then(|s| s.current.as_ref())
            .filter(|c| c.is_live())
    }

    /// Every current connection that is not closing.
    pub(crate) fn all_live(&self) -> impl Iterator<Item = &Conn> {
        self.slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .filter(|c| c.is_live())
    }

    /// The peer's current and pending connections (closing or not).
    pub(crate) fn of_peer(&self, peer: &PeerId) -> Vec<Conn> {
        self.slots
            .get(peer)
            .map(|s| s.current.iter().chain(&s.pending).cloned().collect())
            .unwrap_or_default()
    }

    /// Refuses every later connection and returns every connection still running.
    pub(crate) fn begin_shutdown(&mut self) -> Vec<Conn> {
        self.shutting_down = true;
        self.slots
            .values()
            .flat_map(|s| {
                s.current
                    .iter()
                    .chain(&s.pending)
                    .chain(s.closing.iter().map(|(c, _)| c))
            })
            .cloned()
            .collect()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Adds the final counters of a connection that was never placed in the table.
    pub(crate) fn add_closed(&mut self, metrics: &PeerMetrics) {
        self.closed_totals += metrics;
    }

    /// The counters of every connection admitted so far, summed: those in the table as they
    /// stand, those gone as they ended.
    pub(crate) fn totals(&self) -> PeerMetrics {
        let mut totals = self.closed_totals.clone();
        for s in self.slots.values() {
            let conns = s.current.iter().chain(&s.pending);
            for c in conns.chain(s.closing.iter().map(|(c, _)| c)) {
                totals += &c.handle.metrics();
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionOrigin::{Inbound, Outbound};

    #[test]
    fn both_ends_keep_the_connection_dialed_by_the_larger_id() {
        let (small, large) = (PeerId::from_u64(1), PeerId::from_u64(2));
        // Connection X dialed by `large`, Y dialed by `small`, arriving in either order.
        // At `large`, X is outbound and Y inbound; at `small`, the reverse.
        for (at, remote, x, y) in [
            (large, small, Outbound, Inbound),
            (small, large, Inbound, Outbound),
        ] {
            // X first, then Y: X stays.
            assert!(!keeps_new(at, remote, x, y));
            // Y first, then X: X replaces Y.
            assert!(keeps_new(at, remote, y, x));
        }
    }

    #[test]
    fn same_dialer_newer_wins() {
        let (a, b) = (PeerId::from_u64(1), PeerId::from_u64(2));
        for (l, r) in [(a, b), (b, a)] {
            assert!(keeps_new(l, r, Inbound, Inbound));
            assert!(keeps_new(l, r, Outbound, Outbound));
        }
    }
}
