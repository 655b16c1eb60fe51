//! Polling before parking (`PeerConfig::spin`), with a process-wide cap.
//!
//! Polling pays off when a core would otherwise go idle: waking a thread parked on an idle core
//! is what costs about 25 µs on the VMs this was measured on. With many connections busy at
//! once the cores are not idle and polling only burns time the other threads need, so at most
//! two connection threads per core poll at a time; the others park at once. (One per core
//! was tried: an RPC round trip between two peers has four threads worth keeping awake, and
//! with two of them parked its median went from about 18 to 65 µs on 2 cores.)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Connection threads polling right now, across the process.
static POLLING: AtomicUsize = AtomicUsize::new(0);

/// How many connection threads may poll at once.
fn cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) * 2)
}

/// Calls `poll` until it returns `Some`, `spin` has passed without it, or `deadline`; yields
/// the core between calls. `None` at once if `spin` is zero or the process-wide cap of
/// polling threads is reached.
pub(crate) fn poll_for<T>(
    spin: Duration,
    deadline: Option<Instant>,
    poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    if spin.is_zero() {
        return None;
    }
    if POLLING.fetch_add(1, Ordering::Relaxed) >= cap() {
        POLLING.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    let found = poll_until(spin, deadline, poll);
    POLLING.fetch_sub(1, Ordering::Relaxed);
    found
}

/// [`poll_for`] without the cap.
fn poll_until<T>(
    spin: Duration,
    deadline: Option<Instant>,
    mut poll: impl FnMut() -> Option<T>,
) -> Option<T> {
    let until = crate::proto::deadline_after(Instant::now(), spin);
    let until = deadline.map_or(until, |d| d.min(until));
    let mut polls = 0u32;
    loop {
        if let Some(x) = poll() {
            return Some(x);
        }
        polls += 1;
        // The clock is read every few polls, not on each.
        if polls.is_multiple_of(8) && Instant::now() >= until {
            return None;
        }
        // Lets a thread waiting for this core run first.
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `poll_until` rather than `poll_for`: other tests' connections may hold the cap.
    #[test]
    fn zero_spin_polls_nothing_and_a_found_value_ends_the_poll() {
        let mut calls = 0;
        assert_eq!(
            poll_for(Duration::ZERO, None, || {
                calls += 1;
                Some(1)
            }),
            None
        );
        assert_eq!(calls, 0);
        let mut n = 0;
        assert_eq!(
            poll_until(Duration::from_secs(10), None, || {
                n += 1;
                (n == 3).then_some(n)
            }),
            Some(3)
        );
    }

    #[test]
    fn polling_ends_at_the_spin_or_the_deadline() {
        let start = Instant::now();
        assert_eq!(
            poll_until(Duration::from_millis(5), None, || None::<()>),
            None
        );
        assert!(start.elapsed() >= Duration::from_millis(5));
        let start = Instant::now();
        let soon = Some(start + Duration::from_millis(1));
        assert_eq!(
            poll_until(Duration::from_secs(60), soon, || None::<()>),
            None
        );
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
