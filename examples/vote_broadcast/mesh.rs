//! The validators' connections, whichever [`System`] serves them: who is connected to whom
//! now, every connection end ever opened with the votes it sent, and the sockets a stalled
//! validator leaves unread.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use syncpeer::{Bytes, DisconnectReason};

use crate::plan::tcp_pair;
use crate::workload::{Counts, System};

/// A socket left unread, with what its end will need once served.
type Held = (TcpStream, usize, usize, Arc<AtomicU64>);

/// One end of a connection and its votes.
struct Slot<E> {
    end: Option<E>,
    /// The socket, while its validator is stalled and leaves it unread.
    held: Option<Held>,
    sent: u64,
    refused: u64,
    /// This end's votes that the other end counted.
    delivered: Arc<AtomicU64>,
    /// Closed by a health check while the other end was stalled.
    to_stalled: bool,
}

/// A full mesh of connections between validators.
pub(crate) struct Mesh<S: System> {
    system: S,
    slots: Vec<Slot<S::End>>,
    /// `current[a][b]`: the slot of `a`'s end of its connection to `b`.
    current: Vec<Vec<usize>>,
    stalled: Option<usize>,
}

impl<S: System> Mesh<S> {
    /// Connects every pair of `n` validators.
    pub(crate) fn new(system: S, n: usize) -> Mesh<S> {
        let current = vec![vec![0; n]; n];
        let mut mesh = Mesh {
            system,
            slots: Vec::new(),
            current,
            stalled: None,
        };
        for a in 0..n {
            (a + 1..n).for_each(|b| mesh.connect(a, b));
        }
        mesh
    }

    /// A new connection between `a` and `b`; a stalled validator's end is left unread.
    fn connect(&mut self, a: usize, b: usize) {
        let (sa, sb) = tcp_pair().expect("a loopback connection");
        let (a_to_b, b_to_a) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        for (me, remote, socket, mine, theirs) in
            [(a, b, sa, &a_to_b, &b_to_a), (b, a, sb, &b_to_a, &a_to_b)]
        {
            let incoming = theirs.clone();
            let (end, held) = match self.stalled == Some(me) {
                true => (None, Some((socket, me, remote, incoming))),
                false => (Some(self.system.open(socket, me, remote, incoming)), None),
            };
            self.current[me][remote] = self.slots.len();
            let (sent, refused, delivered) = (0, 0, mine.clone());
            self.slots.push(Slot {
                end,
                held,
                sent,
                refused,
                delivered,
                to_stalled: false,
            });
        }
    }

    /// Validator `v` sends `vote` on each of its connections, unless it is stalled.
    pub(crate) fn broadcast(&mut self, v: usize, vote: &Bytes) {
        if self.stalled == Some(v) {
            return;
        }
        for u in (0..self.current.len()).filter(|&u| u != v) {
            let slot = &mut self.slots[self.current[v][u]];
            let end = slot
                .end
                .as_mut()
                .expect("a validator that is not stalled serves");
            match self.system.send(end, vote.clone()) {
                true => slot.sent += 1,
                false => slot.refused += 1,
            }
        }
    }

    /// `closer` closes its connection to `other`; a new one replaces it. The other end is
    /// left to notice the close by itself.
    pub(crate) fn recycle(&mut self, closer: usize, other: usize, reason: DisconnectReason) {
        let slot = &mut self.slots[self.current[closer][other]];
        let end = slot
            .end
            .as_mut()
            .expect("the closer serves its connections");
        self.system.close(end, reason);
        let health = reason == DisconnectReason::NetworkHealthCheckFailure;
        slot.to_stalled = health && self.stalled == Some(other);
        self.connect(closer, other);
    }

    /// Validator `v` leaves every connection opened from now on unread, and sends nothing.
    pub(crate) fn stall(&mut self, v: usize) {
        self.stalled = Some(v);
    }

    /// Serves every socket left unread.
    pub(crate) fn resume(&mut self) {
        self.stalled = None;
        for slot in &mut self.slots {
            if let Some((socket, me, remote, incoming)) = slot.held.take() {
                slot.end = Some(self.system.open(socket, me, remote, incoming));
            }
        }
    }

    /// Every validator closes every connection it has; once all have closed, the counts of
    /// every connection end, and of those closed to the stalled validator.
    pub(crate) fn shut_down(mut self) -> (Counts, Counts) {
        self.resume();
        let n = self.current.len();
        for (a, b) in (0..n).flat_map(|a| (0..n).filter(move |&b| b != a).map(move |b| (a, b))) {
            let end = self.slots[self.current[a][b]].end.as_mut().expect("served");
            self.system
                .close(end, DisconnectReason::RequestedByPeerManager);
        }
        let mut ends = Vec::new();
        for slot in &mut self.slots {
            ends.push(slot.end.take().expect("every end is served by now"));
        }
        let (mut all, mut to_stalled) = (Counts::default(), Counts::default());
        for (slot, (abandoned, reported)) in self.slots.iter().zip(self.system.finish(ends)) {
            let sums = match slot.to_stalled {
                true => vec![&mut all, &mut to_stalled],
                false => vec![&mut all],
            };
            for c in sums {
                c.sent += slot.sent;
                c.refused += slot.refused;
                c.delivered += slot.delivered.load(Relaxed);
                c.abandoned = abandoned.map(|a| c.abandoned.unwrap_or(0) + a);
                c.reported = reported.map(|r| c.reported.unwrap_or(0) + r);
            }
        }
        (all, to_stalled)
    }
}
