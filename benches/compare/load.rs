//! The contention section's background load: [`Load`] starts N busy processes at the default
//! priority (N = the cores this process may use, `available_parallelism`) and kills them when
//! dropped, also when a panic unwinds through the section.
//!
//! Each busy process is this bench binary run again with [`BURN_ENV`] set: a loop of integer
//! arithmetic with no system calls and no memory traffic, at nice 0, which checks every few
//! milliseconds that its parent is still the process that started it and exits otherwise (so
//! even a bench killed with SIGKILL leaves nothing spinning), and exits after [`MAX_LIFE`] in
//! any case.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to the parent's process id) in a busy process.
pub(crate) const BURN_ENV: &str = "SYNCPEER_BENCH_BURN";
/// A busy process never outlives this, whatever happens to its parent.
const MAX_LIFE: Duration = Duration::from_secs(600);
/// Time given to the busy processes to start before anything is measured.
const SETTLE: Duration = Duration::from_millis(200);

/// Busy processes, killed and reaped on drop.
#[derive(Debug)]
pub(crate) struct Load {
    children: Vec<Child>,
}

/// How many busy processes the section starts: one per core.
pub(crate) fn processes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What the load is, for the table and the JSON.
pub(crate) fn description() -> String {
    format!(
        "{} busy processes (one per core) at default priority, each an integer loop with no \
         system calls, started before and killed after each repetition's contention runs",
        processes()
    )
}

impl Load {
    /// Starts one busy process per core.
    pub(crate) fn start() -> Load {
        let exe = std::env::current_exe().expect("the bench binary's path");
        let mut load = Load {
            children: Vec::new(),
        };
        for _ in 0..processes() {
            let child = Command::new(&exe)
                .env(BURN_ENV, std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start a busy process");
            // Pushed at once, so that a later failure still kills the ones started.
            load.children.push(child);
        }
        std::thread::sleep(SETTLE);
        load
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// The body of a busy process; `parent` is [`BURN_ENV`]'s value.
pub(crate) fn burn(parent: &str) {
    let parent: u32 = parent.parse().unwrap_or(0);
    let start = Instant::now();
    let mut x = 1u64;
    while std::os::unix::process::parent_id() == parent && start.elapsed() < MAX_LIFE {
        // A few milliseconds of arithmetic between checks.
        for _ in 0..1_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
}
