//! The round loop, written once for both systems ([`System`]): every round each validator
//! sends its vote on each of its connections, then the plan's events run (graceful closes
//! with votes still queued, the stall, the resume); at the end every validator closes every
//! connection, and each vote is counted as sent, delivered or reported abandoned.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use syncpeer::{Bytes, DisconnectReason};

use crate::mesh::Mesh;
use crate::plan::{Event, Plan};

/// A peer implementation, as the workload drives it.
pub(crate) trait System {
    /// One end of a connection.
    type End;
    /// Starts serving `socket` for validator `me` (connected to `remote`); every vote that
    /// arrives is counted in `delivered`.
    fn open(
        &mut self,
        socket: TcpStream,
        me: usize,
        remote: usize,
        delivered: Arc<AtomicU64>,
    ) -> Self::End;
    /// Offers a vote without waiting; true if it was accepted for sending.
    fn send(&mut self, end: &mut Self::End, vote: Bytes) -> bool;
    /// Starts a graceful close and returns at once.
    fn close(&mut self, end: &mut Self::End, reason: DisconnectReason);
    /// Waits (bounded) until every end has closed and every delivery is counted; per end, how
    /// many of its votes the system reported abandoned, by receipts and by drain reports
    /// (`None`: the system reports nothing).
    fn finish(self, ends: Vec<Self::End>) -> Vec<(Option<u64>, Option<u64>)>;
}

/// Votes of a set of connection ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    /// Accepted by a send.
    pub(crate) sent: u64,
    /// Refused by a send (queue full): the sender kept them, knowingly.
    pub(crate) refused: u64,
    /// Counted by the receiving validator.
    pub(crate) delivered: u64,
    /// Receipts that resolved `Abandoned`; `None` if the system has no receipts.
    pub(crate) abandoned: Option<u64>,
    /// The same, from the drain reports of the closes.
    pub(crate) reported: Option<u64>,
}

impl Counts {
    /// Sent, neither delivered nor reported: lost without anyone being told.
    pub(crate) fn silently_lost(&self) -> i64 {
        self.sent as i64 - self.delivered as i64 - self.abandoned.unwrap_or(0) as i64
    }
}

/// What one system did with the workload.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) all: Counts,
    /// Only the connections that the stalled validator's peers closed while it was stalled.
    pub(crate) to_stalled: Counts,
    pub(crate) elapsed: Duration,
}

/// Runs the plan on `system`; `progress(round)` after each round.
pub(crate) fn run<S: System>(plan: &Plan, system: S, progress: &mut dyn FnMut(usize)) -> Outcome {
    let mut mesh = Mesh::new(system, plan.validators);
    let start = Instant::now();
    for round in 0..plan.rounds {
        for v in 0..plan.validators {
            // One buffer for all of a validator's connections (a broadcast does not copy it).
            let mut vote = vec![0u8; plan.vote_size];
            vote[..8].copy_from_slice(&(round as u64).to_le_bytes());
            vote[8] = v as u8;
            mesh.broadcast(v, &Bytes::from(vote));
        }
        for event in &plan.events[round] {
            match *event {
                Event::Recycle {
                    closer,
                    other,
                    reason,
                } => mesh.recycle(closer, other, reason),
                Event::Stall => mesh.stall(plan.stalled()),
                Event::Resume => mesh.resume(),
            }
        }
        progress(round);
        let due = start + plan.interval * (round as u32 + 1);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let (all, to_stalled) = mesh.shut_down();
    Outcome {
        all,
        to_stalled,
        elapsed: start.elapsed(),
    }
}
