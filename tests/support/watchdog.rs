//! A bound on a whole test, for the waits inside it that only the library bounds (a network's
//! `shutdown`, a handle's `join` after its notice, a thread whose body waits on the library):
//! a test still running after its limit prints its name and aborts the process, so a bug
//! fails the run instead of hanging it.

use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

/// How long one test may run, unless `SYNCPEER_TEST_LIMIT_SECS` says otherwise: far above
/// what any test takes, under ThreadSanitizer and at the stress suite's heavy size included.
const DEFAULT_LIMIT: Duration = Duration::from_secs(600);

/// Ends the watch when dropped.
pub struct Watchdog {
    _done: Sender<()>,
}

/// Starts watching the calling test (named after its thread, as the test harness names it).
pub fn watch() -> Watchdog {
    let limit = std::env::var("SYNCPEER_TEST_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_LIMIT, Duration::from_secs);
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let (done, ended) = crossbeam_channel::bounded::<()>(0);
    std::thread::Builder::new()
        .name("test-watchdog".into())
        .spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(limit) {
                eprintln!("{test} still runs after {limit:?}: a wait that never ends; aborting");
                std::process::abort();
            }
        })
        .expect("spawn the test watchdog");
    Watchdog { _done: done }
}
