//! [`ThreadTuning`]: how a connection's threads ask the operating system to schedule them, and
//! the two system calls that do it. This is the crate's only `unsafe` code.
//!
//! Why it exists: a connection hands every message from thread to thread (application → mux →
//! writer, reader → application). On an idle machine a hand-off costs microseconds. On a busy
//! one, Linux's EEVDF scheduler (6.6 and later) lets the task running on a core finish its
//! slice, about 3 ms, before a thread woken there runs, unless the woken thread asked for a
//! shorter slice: then it preempts at once. The compare bench's contention section measures the
//! difference (milliseconds per round trip without, tens of microseconds with); see the README.

use std::io;
use std::time::Duration;

/// How the threads of a connection ask to be scheduled. The default asks for nothing.
///
/// Linux only; elsewhere [`apply_to_current_thread`](ThreadTuning::apply_to_current_thread)
/// returns an `Unsupported` error and a peer's threads run untuned. A peer whose tuning the
/// kernel refuses (a kernel older than 6.12 has no per-thread slice; a CPU outside the
/// process's set) logs it once at `debug` and runs untuned: tuning never fails a connection.
///
/// To keep the whole path of a message tuned, apply the same tuning to the application's own
/// threads that sit on it (the thread that reads a handler's channel, an RPC caller): a
/// hand-off to an untuned thread waits on a busy machine like any other.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadTuning {
    /// The scheduling slice to ask for (Linux ≥ 6.12: `sched_setattr` with `sched_runtime` for
    /// `SCHED_OTHER`, which the kernel clamps to 0.1–100 ms). A thread woken on a core whose
    /// task has a longer slice preempts it instead of waiting for it to end. No privilege is
    /// needed. `None`: the kernel's default (about 3 ms).
    pub slice: Option<Duration>,
    /// The CPUs to run on (`sched_setaffinity`). With every thread of the path on one core,
    /// each hand-off is a wake-up on the waker's own core, which costs a few microseconds
    /// where waking a thread on another, idle core costs tens on a virtual machine. `None`:
    /// any CPU.
    pub cpus: Option<Vec<usize>>,
    /// Run under the real-time policy `SCHED_FIFO` at this priority (1-99): a woken thread
    /// preempts every ordinary task at once, so the hand-offs cost what they cost on an idle
    /// machine whatever else runs. Needs the privilege (`CAP_SYS_NICE`, or an `RLIMIT_RTPRIO`
    /// at least this high); without it the kernel refuses with `PermissionDenied`. While a
    /// thread with this policy polls (see `PeerConfig::spin`), ordinary tasks on its core wait:
    /// prefer a `spin` of zero with it. `None`: the ordinary policy.
    pub realtime: Option<u8>,
}

impl ThreadTuning {
    /// A slice of 100 µs, the shortest the kernel grants, on any CPU: a woken connection
    /// thread preempts a CPU-bound task rather than waiting out its slice.
    pub fn low_latency() -> ThreadTuning {
        ThreadTuning {
            slice: Some(Duration::from_micros(100)),
            ..ThreadTuning::default()
        }
    }

    /// True if it asks for nothing.
    pub fn is_default(&self) -> bool {
        *self == ThreadTuning::default()
    }

    /// Applies the tuning to the calling thread.
    ///
    /// # Errors
    ///
    /// The system's refusal (`InvalidInput` for a slice the kernel does not support or a CPU
    /// outside the process's set), or `Unsupported` off Linux. What was applied before the
    /// error stays applied.
    pub fn apply_to_current_thread(&self) -> io::Result<()> {
        if let Some(cpus) = &self.cpus {
            sys::set_affinity(cpus)?;
        }
        if self.slice.is_some() || self.realtime.is_some() {
            sys::set_attr(self.slice, self.realtime)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod sys {
    //! The system calls. Neither libc nor nix wraps `sched_getattr`/`sched_setattr` (glibc
    //! added wrappers only in 2.41), so they go through `syscall(2)`, the crate's only `unsafe`
    //! code; nix wraps `sched_setaffinity`.
    #![allow(unsafe_code)]

    use std::io;
    use std::time::Duration;

    /// `struct sched_attr`, its first version (`SCHED_ATTR_SIZE_VER0`, 48 bytes): every field
    /// the kernel has had since 3.14. The kernel reads and writes only `size` bytes of it.
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_FIFO: u32 = 1;

    /// Sets the calling thread's slice (kept under its ordinary policy and nice value) and,
    /// if `realtime` is given, switches it to `SCHED_FIFO` at that priority.
    pub(super) fn set_attr(slice: Option<Duration>, realtime: Option<u8>) -> io::Result<()> {
        let size = std::mem::size_of::<SchedAttr>() as u32;
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is a valid, writable `sched_attr` of `size` bytes, and the kernel
        // writes at most `size` bytes into it; pid 0 is the calling thread.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        attr.size = size;
        match realtime {
            Some(priority) => {
                attr.policy = SCHED_FIFO;
                attr.priority = u32::from(priority);
                attr.nice = 0;
            }
            // A real-time or idle policy the application chose stays as it is.
            None if attr.policy != SCHED_OTHER => return Ok(()),
            None => {}
        }
        if let Some(slice) = slice {
            attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        }
        // SAFETY: `attr` is a valid `sched_attr` whose `size` field says how much the kernel
        // may read; pid 0 is the calling thread; the kernel only reads it.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Restricts the calling thread to `cpus`.
    pub(super) fn set_affinity(cpus: &[usize]) -> io::Result<()> {
        let mut set = nix::sched::CpuSet::new();
        for &cpu in cpus {
            set.set(cpu).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "cpu {cpu} is beyond the {} a cpu set holds",
                        nix::sched::CpuSet::count()
                    ),
                )
            })?;
        }
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::time::Duration;

    pub(super) fn set_attr(_: Option<Duration>, _: Option<u8>) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "scheduling attributes are implemented for Linux only",
        ))
    }

    pub(super) fn set_affinity(_: &[usize]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "thread affinity is implemented for Linux only",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_asks_for_nothing_and_applies_as_a_no_op() {
        let t = ThreadTuning::default();
        assert!(t.is_default());
        assert!(t.apply_to_current_thread().is_ok());
    }

    /// The slice the kernel reports for the calling thread, in nanoseconds (Linux ≥ 6.6).
    #[cfg(target_os = "linux")]
    fn reported_slice() -> Option<u64> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// The kernel takes the slice (this machine's kernel is 6.18; one without per-thread
    /// slices refuses, and then nothing changed).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_slice_is_what_the_kernel_then_reports() {
        std::thread::spawn(|| {
            let before = reported_slice();
            match ThreadTuning::low_latency().apply_to_current_thread() {
                Ok(()) => {
                    if before.is_some() {
                        assert_eq!(reported_slice(), Some(100_000));
                    }
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                    assert_eq!(reported_slice(), before);
                }
            }
        })
        .join()
        .unwrap();
    }

    /// The policy the kernel reports for the calling thread (0 ordinary, 1 FIFO).
    #[cfg(target_os = "linux")]
    fn reported_policy() -> Option<u32> {
        let sched = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = sched.lines().find(|l| l.starts_with("policy"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    /// Real-time priority is granted with the privilege (CI runs as root here) and refused
    /// with `PermissionDenied` without it; either way nothing half-applied is left.
    #[cfg(target_os = "linux")]
    #[test]
    fn realtime_is_fifo_or_refused_for_want_of_privilege() {
        std::thread::spawn(|| {
            let rt = ThreadTuning {
                realtime: Some(1),
                ..ThreadTuning::default()
            };
            match rt.apply_to_current_thread() {
                Ok(()) => assert_eq!(reported_policy(), Some(1)),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                    assert_eq!(reported_policy(), Some(0));
                }
            }
        })
        .join()
        .unwrap();
    }

    /// On a thread of its own, so that the test runner's threads stay as they were.
    #[cfg(target_os = "linux")]
    #[test]
    fn affinity_applies_and_a_cpu_out_of_range_is_refused() {
        std::thread::spawn(|| {
            let pinned = ThreadTuning {
                cpus: Some(vec![0]),
                ..ThreadTuning::default()
            };
            pinned.apply_to_current_thread().expect("cpu 0 exists");
            let beyond = ThreadTuning {
                cpus: Some(vec![1 << 20]),
                ..ThreadTuning::default()
            };
            let e = beyond.apply_to_current_thread().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        })
        .join()
        .unwrap();
    }
}
