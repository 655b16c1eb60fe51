//! The monitor thread (`sp-mon-<local>`), one per network. It waits only in a crossbeam
//! `Select` over: its control channel (a new connection to watch, or stop), the health-check
//! requests from every peer, each connection's one `Disconnected` notice, each ping in flight,
//! and the next health-check round.
//!
//! - A notice means the connection's threads have ended: the monitor joins them, updates the
//!   peer table and thereby sends the `Disconnected` or `Replaced` event, and wakes the dialer
//!   (a kept peer may need redialing).
//! - A ping request is answered with its pong at once.
//! - Every `interval` it pings each current connection that has no ping in flight; a failed
//!   ping counts against the connection, a pong clears the count, and one failure past the
//!   tolerance closes it gracefully with `NetworkHealthCheckFailure` (see `health.rs`).
//!
//! It does not wait on one peer: closes are started without waiting for the drain, the joins
//! happen after the notice, when the threads are already ending, and pings are started only
//! when the peer's outbox has room (a full outbox counts as a failed ping), so `rpc_start`
//! does not wait. The one exception is a race: if application threads fill the outbox between
//! that check and the ping, `rpc_start` waits for room, which the peer's `write_timeout`
//! bounds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Select};

use super::dialer::Command;
use super::health::{HEALTH_CHECK_PROTOCOL, Health, HealthMsg, Nonces, Verdict};
use super::{Inner, event::ConnectionId};
use crate::error::RpcError;
use crate::peer::{DisconnectReason, Disconnected, Inbound, PeerHandle, PeerId, PendingRpc};

/// What the network tells the monitor.
#[derive(Debug)]
pub(crate) enum Control {
    /// Watch a newly spawned connection.
    Watch(Watched),
    /// Handle the notices already received, then exit.
    Stop,
}

/// A connection as the monitor sees it.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) id: ConnectionId,
    pub(crate) peer_id: PeerId,
    pub(crate) handle: PeerHandle,
    pub(crate) notices: Receiver<Disconnected>,
}

#[derive(Debug)]
struct Tracked {
    conn: Watched,
    health: Health,
    ping: Option<(u32, PendingRpc)>,
}

/// What one wait produced.
enum Wake {
    Control(Control),
    Request(Inbound),
    Notice(usize, Option<Disconnected>),
    Pong(usize, Result<bytes::Bytes, RpcError>),
    Tick,
}

pub(crate) struct Monitor {
    inner: Arc<Inner>,
    /// `network <local id>`, to start log lines with.
    name: String,
    control: Receiver<Control>,
    requests: Receiver<Inbound>,
    conns: Vec<Tracked>,
    next_round: Option<Instant>,
    nonces: Nonces,
}

impl Monitor {
    pub(crate) fn new(
        inner: Arc<Inner>,
        control: Receiver<Control>,
        requests: Receiver<Inbound>,
    ) -> Monitor {
        let next_round = inner
            .config
            .health_check
            .as_ref()
            .map(|h| Instant::now() + h.interval);
        let seed = inner.seed();
        Monitor {
            name: format!("network {}", inner.local.peer_id),
            inner,
            control,
            requests,
            conns: Vec::new(),
            next_round,
            nonces: Nonces::new(seed),
        }
    }

    pub(crate) fn run(mut self) {
        log::debug!("{}: monitor started", self.name);
        loop {
            // Checked here too: `select_deadline` prefers a ready channel to an expired
            // deadline, and a busy peer must not postpone the rounds.
            if self.next_round.is_some_and(|t| t <= Instant::now()) {
                self.round();
            }
            match self.wait() {
                Wake::Control(Control::Watch(w)) => self.conns.push(Tracked {
                    conn: w,
                    health: Health::default(),
                    ping: None,
                }),
                Wake::Control(Control::Stop) => break,
                Wake::Request(m) => self.answer(m),
                Wake::Notice(i, notice) => self.closed(i, notice),
                Wake::Pong(i, result) => self.pong(i, result),
                Wake::Tick => self.round(),
            }
        }
        // Shutdown has joined every connection, so every notice is already queued.
        let mut i = 0;
        while i < self.conns.len() {
            match self.conns[i].conn.notices.try_recv() {
                Ok(n) => self.closed(i, Some(n)),
                Err(_) => i += 1,
            }
        }
        log::debug!("{}: monitor exits", self.name);
    }

    fn wait(&self) -> Wake {
        let mut sel = Select::new();
        sel.recv(&self.control);
        sel.recv(&self.requests);
        for t in &self.conns {
            sel.recv(&t.conn.notices);
        }
        let pinged: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].ping.is_some())
            .collect();
        for &i in &pinged {
            if let Some((_, rpc)) = &self.conns[i].ping {
                sel.recv(rpc.receiver());
            }
        }
        let oper = match self.next_round {
            None => sel.select(),
            Some(t) => match sel.select_deadline(t) {
                Ok(oper) => oper,
                Err(_) => return Wake::Tick,
            },
        };
        let n = self.conns.len();
        match oper.index() {
            // The network holds the control sender until it has sent `Stop`.
            0 => Wake::Control(oper.recv(&self.control).unwrap_or(Control::Stop)),
            // The network holds a request sender for as long as the monitor runs.
            1 => match oper.recv(&self.requests) {
                Ok(m) => Wake::Request(m),
                Err(_) => Wake::Control(Control::Stop),
            },
            k if k < 2 + n => {
                let i = k - 2;
                Wake::Notice(i, oper.recv(&self.conns[i].conn.notices).ok())
            }
            k => {
                let i = pinged[k - 2 - n];
                let result = match &self.conns[i].ping {
                    Some((_, rpc)) => oper
                        .recv(rpc.receiver())
                        .unwrap_or(Err(RpcError::Disconnected)),
                    None => Err(RpcError::Disconnected),
                };
                Wake::Pong(i, result)
            }
        }
    }

    /// Answers one health-check request from a remote.
    fn answer(&self, m: Inbound) {
        let Inbound::Request {
            from,
            data,
            responder,
            ..
        } = m
        else {
            log::debug!("{}: health check: ignoring a direct send", self.name);
            return;
        };
        match HealthMsg::decode(&data) {
            Some(HealthMsg::Ping(nonce)) => {
                log::trace!("{}: peer {from}: pong {nonce}", self.name);
                let _ = responder.respond(HealthMsg::Pong(nonce).encode());
            }
            _ => log::warn!("{}: peer {from}: malformed health-check request", self.name),
        }
    }

    /// Connection `i` has ended: reap its threads and tell the peer table.
    fn closed(&mut self, i: usize, notice: Option<Disconnected>) {
        let t = self.conns.swap_remove(i);
        // The report is published before the notice is sent, so this returns at once; it
        // also joins the connection's threads.
        let report = t
            .conn
            .handle
            .join()
            .expect("the monitor is not one of the connection's threads");
        let (reason, report) = match notice {
            Some(n) => (n.reason, n.report),
            None => (report.reason, report),
        };
        log::debug!(
            "{}: peer {}: {} ended ({reason})",
            self.name,
            t.conn.peer_id,
            t.conn.id
        );
        self.inner
            .registry
            .lock()
            .closed(t.conn.id, t.conn.peer_id, reason, report);
        self.inner.changed.notify_all();
        self.inner.dialer.send(Command::Check);
    }

    /// Starts a round of pings.
    fn round(&mut self) {
        let Some(hc) = self.inner.config.health_check.clone() else {
            self.next_round = None;
            return;
        };
        let now = Instant::now();
        self.next_round = Some(now + hc.interval);
        let current: HashSet<ConnectionId> = {
            let reg = self.inner.registry.lock();
            reg.all_live().map(|c| c.info.id).collect()
        };
        let capacity = self.inner.peer_config.outbox_capacity as u64;
        for i in 0..self.conns.len() {
            let t = &mut self.conns[i];
            if t.ping.is_some() || !current.contains(&t.conn.id) {
                continue;
            }
            if t.conn.handle.metrics().outbox_depth >= capacity {
                log::debug!(
                    "{}: peer {}: outbox full, ping counted as failed",
                    self.name,
                    t.conn.peer_id
                );
                self.failed(i);
                continue;
            }
            let nonce = self.nonces.next();
            let ping = HealthMsg::Ping(nonce).encode();
            match t
                .conn
                .handle
                .rpc_start(HEALTH_CHECK_PROTOCOL, ping, hc.timeout)
            {
                Ok(rpc) => t.ping = Some((nonce, rpc)),
                // Closing: its notice will follow.
                Err(RpcError::Disconnected) => {}
                Err(e) => {
                    log::debug!("{}: peer {}: ping not sent: {e}", self.name, t.conn.peer_id);
                    self.failed(i);
                }
            }
        }
    }

    fn pong(&mut self, i: usize, result: Result<bytes::Bytes, RpcError>) {
        let t = &mut self.conns[i];
        let Some((nonce, _)) = t.ping.take() else {
            return;
        };
        match result {
            Ok(data) if HealthMsg::decode(&data) == Some(HealthMsg::Pong(nonce)) => {
                let tolerated = self.tolerated();
                self.conns[i].health.record(true, tolerated);
            }
            Ok(_) => {
                log::warn!(
                    "{}: peer {}: pong does not match the ping",
                    self.name,
                    t.conn.peer_id
                );
                self.failed(i);
            }
            // The connection is closing; that is not the peer's ill health.
            Err(RpcError::Disconnected | RpcError::Cancelled) => {}
            Err(e) => {
                log::debug!("{}: peer {}: ping failed: {e}", self.name, t.conn.peer_id);
                self.failed(i);
            }
        }
    }

    fn tolerated(&self) -> u32 {
        self.inner
            .config
            .health_check
            .as_ref()
            .map_or(u32::MAX, |h| h.failures_tolerated)
    }

    fn failed(&mut self, i: usize) {
        let tolerated = self.tolerated();
        let t = &mut self.conns[i];
        match t.health.record(false, tolerated) {
            Verdict::Unhealthy => {
                log::warn!(
                    "{}: peer {}: {} pings failed in a row, disconnecting",
                    self.name,
                    t.conn.peer_id,
                    tolerated.saturating_add(1)
                );
                t.conn
                    .handle
                    .close(DisconnectReason::NetworkHealthCheckFailure);
            }
            Verdict::Failing(n) => {
                log::debug!(
                    "{}: peer {}: {n} failed ping(s) in a row",
                    self.name,
                    t.conn.peer_id
                )
            }
            Verdict::Healthy => {}
        }
    }
}
