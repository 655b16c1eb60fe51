//! [`NetworkConfig`] and [`HealthCheckConfig`]: the timeouts of dialing and of the handshake,
//! the limit on handshakes in progress, and the health checker's schedule, with their defaults
//! and their validation (done once, when the network is built).

use std::time::Duration;

use super::error::BuildError;

/// Settings of a [`Network`](super::Network) beyond those of each connection
/// ([`PeerConfig`](crate::PeerConfig)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// How long `connect` waits for the TCP connection to be established. Default 30 s (the
    /// original's `TRANSPORT_TIMEOUT`).
    pub dial_timeout: Duration,
    /// How long either side waits for the other's handshake once the TCP connection is up.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// Inbound connections allowed to be in their handshake at once; more are closed at once.
    /// Default 128.
    pub max_pending_handshakes: usize,
    /// Periodic pings of every peer, or `None` for no checks. The network answers pings in
    /// either case. Default: [`HealthCheckConfig::default`].
    pub health_check: Option<HealthCheckConfig>,
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig {
            dial_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 128,
            health_check: Some(HealthCheckConfig::default()),
        }
    }
}

/// When the health checker pings and when it gives up on a peer. The defaults are the
/// original's (`ping_interval_ms` 10 000, `ping_timeout_ms` 20 000, `ping_failures_tolerated`
/// 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Time between two rounds of pings. Default 10 s.
    pub interval: Duration,
    /// How long one ping waits for its pong. Default 20 s. It may exceed `interval`: a peer
    /// is never pinged again while its previous ping is in flight, so failures are counted
    /// in order.
    pub timeout: Duration,
    /// Consecutive failed pings tolerated. One more closes the connection with
    /// `NetworkHealthCheckFailure` (as the original, whose test is `failures > tolerated`):
    /// with the default 3, the fourth consecutive failure disconnects. Default 3.
    pub failures_tolerated: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> HealthCheckConfig {
        HealthCheckConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            failures_tolerated: 3,
        }
    }
}

impl NetworkConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidConfig`] naming the first zero timeout, interval or limit.
    pub fn validate(&self) -> Result<(), BuildError> {
        let mut durations = vec![
            ("dial_timeout", self.dial_timeout),
            ("handshake_timeout", self.handshake_timeout),
        ];
        if let Some(h) = &self.health_check {
            durations.push(("health_check.interval", h.interval));
            durations.push(("health_check.timeout", h.timeout));
        }
        for (field, value) in durations {
            if value.is_zero() {
                return Err(BuildError::InvalidConfig {
                    field,
                    reason: "must be longer than zero",
                });
            }
        }
        if self.max_pending_handshakes == 0 {
            return Err(BuildError::InvalidConfig {
                field: "max_pending_handshakes",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals_and_valid() {
        let c = NetworkConfig::default();
        let h = c.health_check.clone().unwrap();
        assert_eq!(h.interval, Duration::from_secs(10));
        assert_eq!(h.timeout, Duration::from_secs(20));
        assert_eq!(h.failures_tolerated, 3);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_zero_durations() {
        let c = NetworkConfig {
            health_check: Some(HealthCheckConfig {
                interval: Duration::ZERO,
                ..Default::default()
            }),
            ..Default::default()
        };
        match c.validate() {
            Err(BuildError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "health_check.interval")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
