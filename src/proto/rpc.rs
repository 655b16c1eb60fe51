//! RPC bookkeeping, without I/O and without a clock: the outbound table of requests waiting
//! for responses ([`PendingRpcs`]) and the inbound accounting of requests waiting for the local
//! application's reply ([`InboundRpcs`]).
//!
//! Request ids come from a per-connection counter that starts at 0 and wraps, assigned only
//! once a request is admitted (as in the original). Deadlines are kept sorted so expiry at `now`
//! costs only the expired entries.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::message::{ProtocolId, RequestId};

/// Refused: the concurrency limit is reached. Hands the caller's token back.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyPending<T> {
    /// The limit that was reached.
    pub limit: usize,
    /// What the caller passed in.
    pub token: T,
}

#[derive(Debug)]
struct Outbound<R> {
    protocol: ProtocolId,
    deadline: Instant,
    token: R,
}

/// Outbound RPCs waiting for a response. `R` is the caller's token (in the peer, the channel
/// on which the caller waits), handed back with the outcome.
#[derive(Debug)]
pub struct PendingRpcs<R> {
    next_id: u32,
    limit: usize,
    pending: HashMap<RequestId, Outbound<R>>,
    deadlines: BTreeSet<(Instant, RequestId)>,
}

impl<R> PendingRpcs<R> {
    /// An empty table admitting at most `limit` requests at once.
    pub fn new(limit: usize) -> PendingRpcs<R> {
        PendingRpcs {
            next_id: 0,
            limit,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Requests waiting for a response.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if no request is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Admits a request that times out `timeout` after `now`, and assigns its id.
    ///
    /// # Errors
    ///
    /// [`TooManyPending`] at the limit; no id is consumed.
    pub fn start(
        &mut self,
        now: Instant,
        protocol: ProtocolId,
        timeout: Duration,
        token: R,
    ) -> Result<RequestId, TooManyPending<R>> {
        if self.pending.len() >= self.limit {
            return Err(TooManyPending {
                limit: self.limit,
                token,
            });
        }
        // After a wrap the id may, in theory, still be waiting: skip it (the table is small).
        let mut id = RequestId(self.next_id);
        while self.pending.contains_key(&id) {
            id = RequestId(id.0.wrapping_add(1));
        }
        self.next_id = id.0.wrapping_add(1);
        let deadline = super::deadline_after(now, timeout);
        self.deadlines.insert((deadline, id));
        self.pending.insert(
            id,
            Outbound {
                protocol,
                deadline,
                token,
            },
        );
        Ok(id)
    }

    /// A response for `id` arrived. `None` if the id is unknown or already expired or
    /// cancelled (the caller counts and ignores it).
    pub fn complete(&mut self, id: RequestId) -> Option<(ProtocolId, R)> {
        let entry = self.pending.remove(&id)?;
        self.deadlines.remove(&(entry.deadline, id));
        Some((entry.protocol, entry.token))
    }

    /// Removes every request whose deadline is at or before `now`, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<(RequestId, R)> {
        let mut out = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(entry) = self.pending.remove(&id) {
                out.push((id, entry.token));
            }
        }
        out
    }

    /// Removes the requests for which `cancelled` is true (callers that stopped waiting).
    pub fn cancel_where(&mut self, mut cancelled: impl FnMut(&R) -> bool) -> Vec<(RequestId, R)> {
        let ids: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, e)| cancelled(&e.token))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.complete(id).map(|(_, token)| (id, token)))
            .collect()
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Removes every request (the connection is closing).
    pub fn drain(&mut self) -> Vec<(RequestId, R)> {
        self.deadlines.clear();
        self.pending.drain().map(|(id, e)| (id, e.token)).collect()
    }
}

#[cfg(test)]
impl<R> PendingRpcs<R> {
    /// Moves the id counter, so tests reach the wrap without 2^32 requests.
    pub(crate) fn set_next_id(&mut self, id: u32) {
        self.next_id = id;
    }
}

/// Why a reply to an inbound request is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyRefused {
    /// The reply was produced at or after the request's deadline.
    TimedOut,
    /// No such request is waiting (never admitted, or already answered or expired).
    Unknown,
}

#[derive(Debug)]
struct Inbound {
    id: RequestId,
    deadline: Instant,
    priority: u8,
    /// Past its deadline: no longer counted against the limit, but kept until the
    /// application's reply or drop arrives, so a reply made in time is honoured even if it
    /// reaches the session after the deadline.
    expired: bool,
}

/// Inbound requests handed to the application and not yet answered.
///
/// Request ids are chosen by the remote and not deduplicated (the original answers each copy);
/// entries are therefore keyed by a local sequence number, the *slot*.
#[derive(Debug)]
pub struct InboundRpcs {
    limit: usize,
    timeout: Duration,
    next_slot: u64,
    active: usize,
    waiting: HashMap<u64, Inbound>,
    deadlines: BTreeSet<(Instant, u64)>,
}

/// An admitted inbound request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// Local handle of the request.
    pub slot: u64,
    /// When it times out.
    pub deadline: Instant,
}

impl InboundRpcs {
    /// Admits at most `limit` requests at once, each for `timeout`.
    pub fn new(limit: usize, timeout: Duration) -> InboundRpcs {
        InboundRpcs {
            limit,
            timeout,
            next_slot: 0,
            active: 0,
            waiting: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Requests counted against the limit (admitted, not answered, not expired).
    pub fn len(&self) -> usize {
        self.active
    }

    /// True if none is counted.
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    /// Admits a request received at `now`.
    ///
    /// # Errors
    ///
    /// [`TooManyPending`] at the limit (the request is to be dropped, as in the original).
    pub fn admit(
        &mut self,
        now: Instant,
        id: RequestId,
        priority: u8,
    ) -> Result<Admitted, TooManyPending<RequestId>> {
        if self.active >= self.limit {
            return Err(TooManyPending {
                limit: self.limit,
                token: id,
            });
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let deadline = super::deadline_after(now, self.timeout);
        self.deadlines.insert((deadline, slot));
        self.waiting.insert(
            slot,
            Inbound {
                id,
                deadline,
                priority,
                expired: false,
            },
        );
        self.active += 1;
        Ok(Admitted { slot, deadline })
    }

    fn remove(&mut self, slot: u64) -> Option<Inbound> {
        let entry = self.waiting.remove(&slot)?;
        if !entry.expired {
            self.deadlines.remove(&(entry.deadline, slot));
            self.active -= 1;
        }
        Some(entry)
    }

    /// The application replied at `at`. Returns the request id and priority to answer with.
    ///
    /// # Errors
    ///
    /// [`ReplyRefused`]: `at` is at or after the deadline, or the slot is unknown (never
    /// admitted, or already answered). The slot is freed either way.
    pub fn reply(&mut self, slot: u64, at: Instant) -> Result<(RequestId, u8), ReplyRefused> {
        let entry = self.remove(slot).ok_or(ReplyRefused::Unknown)?;
        if at >= entry.deadline {
            return Err(ReplyRefused::TimedOut);
        }
        Ok((entry.id, entry.priority))
    }

    /// The application dropped the request without replying: frees its slot.
    pub fn abandon(&mut self, slot: u64) -> bool {
        self.remove(slot).is_some()
    }

    /// Stops counting the requests whose deadline is at or before `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some(&(deadline, slot)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(entry) = self.waiting.get_mut(&slot) {
                entry.expired = true;
                self.active -= 1;
                n += 1;
            }
        }
        n
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProtocolId = ProtocolId(0);

    #[test]
    fn ids_start_at_zero_and_limit_holds() {
        let now = Instant::now();
        let mut t = PendingRpcs::new(2);
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), 'a'),
            Ok(RequestId(0))
        );
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), 'b'),
            Ok(RequestId(1))
        );
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), 'c'),
            Err(TooManyPending {
                limit: 2,
                token: 'c'
            })
        );
        assert_eq!(t.complete(RequestId(0)), Some((P, 'a')));
        assert_eq!(
            t.complete(RequestId(0)),
            None,
            "a late duplicate is ignored"
        );
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), 'c'),
            Ok(RequestId(2))
        );
    }

    #[test]
    fn ids_wrap_and_skip_pending() {
        let now = Instant::now();
        let mut t = PendingRpcs::new(10);
        t.next_id = u32::MAX;
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), ()),
            Ok(RequestId(u32::MAX))
        );
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), ()),
            Ok(RequestId(0))
        );
        t.next_id = u32::MAX;
        assert_eq!(
            t.start(now, P, Duration::from_secs(1), ()),
            Ok(RequestId(1))
        );
    }

    #[test]
    fn expiry_in_deadline_order() {
        let now = Instant::now();
        let mut t = PendingRpcs::new(10);
        t.start(now, P, Duration::from_millis(30), 'a').unwrap();
        t.start(now, P, Duration::from_millis(10), 'b').unwrap();
        t.start(now, P, Duration::from_millis(20), 'c').unwrap();
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        assert!(t.expire(now + Duration::from_millis(9)).is_empty());
        let expired = t.expire(now + Duration::from_millis(20));
        assert_eq!(expired, vec![(RequestId(1), 'b'), (RequestId(2), 'c')]);
        assert_eq!(t.complete(RequestId(1)), None);
        assert_eq!(t.cancel_where(|c| *c == 'a'), vec![(RequestId(0), 'a')]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn inbound_limit_deadline_and_reply() {
        let now = Instant::now();
        let mut t = InboundRpcs::new(2, Duration::from_secs(10));
        let a = t.admit(now, RequestId(5), 0).unwrap();
        let b = t.admit(now, RequestId(5), 0).unwrap();
        assert_ne!(a.slot, b.slot, "duplicate remote ids get their own slots");
        assert!(t.admit(now, RequestId(6), 0).is_err());
        assert_eq!(
            t.reply(a.slot, now + Duration::from_secs(1)),
            Ok((RequestId(5), 0))
        );
        assert_eq!(t.reply(a.slot, now), Err(ReplyRefused::Unknown));
        assert_eq!(t.reply(b.slot, b.deadline), Err(ReplyRefused::TimedOut));
        let c = t.admit(now, RequestId(7), 0).unwrap();
        assert_eq!(t.expire(c.deadline), 1);
        assert!(t.is_empty());
        // A reply made before the deadline is honoured even when it arrives after expiry.
        let late_arrival = c.deadline - Duration::from_millis(1);
        assert_eq!(t.reply(c.slot, late_arrival), Ok((RequestId(7), 0)));
        let d = t.admit(now, RequestId(8), 0).unwrap();
        assert!(t.abandon(d.slot));
        assert!(!t.abandon(d.slot));
    }

    #[test]
    fn duration_max_means_no_limit_not_a_panic() {
        let now = Instant::now();
        let mut out = PendingRpcs::new(1);
        out.start(now, P, Duration::MAX, ()).unwrap();
        assert!(out.next_deadline().unwrap() > now + Duration::from_secs(86_400 * 365));
        let mut inbound = InboundRpcs::new(1, Duration::MAX);
        let a = inbound.admit(now, RequestId(1), 0).unwrap();
        assert!(a.deadline > now + Duration::from_secs(86_400 * 365));
        assert_eq!(inbound.expire(now + Duration::from_secs(3600)), 0);
    }
}
