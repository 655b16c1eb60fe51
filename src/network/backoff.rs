//! The redial schedule of one kept peer, sans-IO: capped exponential backoff plus jitter, as
//! [`ReconnectConfig`] describes it. No clock is read here: the dialer adds the delays to the
//! `Instant` it has, and passes the random numbers in.

use std::time::Duration;

use super::config::ReconnectConfig;

/// Consecutive failed attempts, which set the next delay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Records a failed attempt and returns the delay before the next one, without jitter:
    /// `initial_delay * multiplier^(failures - 1)`, at most `max_delay`.
    pub(crate) fn failed(&mut self, cfg: &ReconnectConfig) -> Duration {
        let mut delay = cfg.initial_delay;
        for _ in 0..self.failures {
            if delay >= cfg.max_delay {
                break;
            }
            delay = delay.saturating_mul(cfg.multiplier);
        }
        self.failures = self.failures.saturating_add(1);
        delay.min(cfg.max_delay)
    }

    /// A connection was made: the next loss starts from the beginning.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A delay below `cfg.jitter`, from a uniformly random `r`.
pub(crate) fn jitter(cfg: &ReconnectConfig, r: u32) -> Duration {
    // In integers: a float product rounds up to the bound itself near `u32::MAX`.
    let nanos = (cfg.jitter.as_nanos() * u128::from(r)) >> 32;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let cfg = ReconnectConfig::default();
        let mut b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|_| b.failed(&cfg).as_secs()).collect();
        // The original's `ExponentialBackoff::from_millis(2).factor(1000)` capped at 60 s.
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.failed(&cfg), Duration::from_secs(2));
        let mut b = Backoff { failures: u32::MAX };
        assert_eq!(b.failed(&cfg), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        let cfg = ReconnectConfig::default();
        assert_eq!(jitter(&cfg, 0), Duration::ZERO);
        assert!(jitter(&cfg, u32::MAX) < cfg.jitter);
        let half = jitter(&cfg, 1 << 31);
        assert_eq!(half, Duration::from_millis(50));
    }
}
