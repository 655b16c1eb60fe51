//! The schedule both systems run, drawn once from the seed: which connection is closed and
//! reopened after which round, when the last validator stalls and resumes, and when its peers'
//! health checks give up on it. Also the loopback sockets, with small buffers.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use syncpeer::DisconnectReason;

/// How long a round lasts.
const INTERVAL: Duration = Duration::from_millis(5);
/// How long the stalled validator reads and sends nothing.
pub(crate) const STALL: Duration = Duration::from_millis(2000);
/// syncpeer's `PeerConfig::linger` here: how long a graceful close may take to deliver what
/// is queued before it gives up on the rest and reports it (5 s by default). Short, so that a
/// close to the stalled validator gives up before the stall ends; long enough for the closes
/// of connections whose other end reads to finish on a busy machine (a close that gives up
/// stops reading too, and what the other end wrote after that is lost to the count).
pub(crate) const LINGER: Duration = Duration::from_millis(500);
/// Socket send and receive buffer asked of the kernel, per socket. Small, so that a validator
/// that stops reading fills its peers' connections to it in a fraction of a second (loopback's
/// self-tuning buffers would hold megabytes, seconds of votes).
const SOCKET_BUFFER: usize = 16 * 1024;
/// On average one scheduled close every this many rounds.
const RECYCLE_EVERY: usize = 20;

/// One thing the schedule does after a round's votes have been sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// `closer` closes its connection to `other` gracefully (votes may still be queued) and a
    /// new connection between them replaces it.
    Recycle {
        closer: usize,
        other: usize,
        reason: DisconnectReason,
    },
    /// The last validator stops reading and sending (its connections were just recycled).
    Stall,
    /// It reads and sends again, starting with every connection it left unread.
    Resume,
}

/// The workload and its schedule.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) validators: usize,
    pub(crate) rounds: usize,
    pub(crate) interval: Duration,
    pub(crate) vote_size: usize,
    pub(crate) seed: u64,
    /// Rounds during which the last validator is stalled.
    pub(crate) stall: Range<usize>,
    /// Per round, what happens after its votes are sent.
    pub(crate) events: Vec<Vec<Event>>,
}

impl Plan {
    /// The fewest rounds a plan can have: the stall, a fifth of the run before it, and one
    /// round after it.
    pub(crate) fn min_rounds() -> usize {
        Self::stall_rounds() * 5 / 4 + 2
    }

    fn stall_rounds() -> usize {
        (STALL.as_millis() / INTERVAL.as_millis()) as usize
    }

    /// Draws the schedule; `rounds` is at least [`Plan::min_rounds`].
    pub(crate) fn new(validators: usize, rounds: usize, seed: u64) -> Plan {
        let (interval, stall_rounds) = (INTERVAL, Self::stall_rounds());
        let stall = rounds / 5..rounds / 5 + stall_rounds;
        assert!(validators >= 2, "at least two validators");
        assert!(
            stall.end < rounds,
            "at least {} rounds",
            stall.end * 5 / 4 + 1
        );
        let mut rng = seed | 1;
        let mut events = vec![Vec::new(); rounds];
        let stalled = validators - 1;
        for (round, ev) in events.iter_mut().enumerate() {
            if random(&mut rng, RECYCLE_EVERY) != 0 {
                continue;
            }
            let (closer, other) = (random(&mut rng, validators), random(&mut rng, validators));
            let touches_stalled = closer == stalled || other == stalled;
            if closer != other && !(touches_stalled && (stall.start..=stall.end).contains(&round)) {
                let reason = DisconnectReason::RequestedByPeerManager;
                ev.push(Event::Recycle {
                    closer,
                    other,
                    reason,
                });
            }
        }
        // The stall: the last validator's connections are reset, and it leaves its end of the
        // new ones unread (the public API has no "stop reading": this is how a frozen
        // process looks from its peers).
        events[stall.start].push(Event::Stall);
        for other in 0..stalled {
            let reason = DisconnectReason::RequestedByPeerManager;
            let closer = stalled;
            events[stall.start].push(Event::Recycle {
                closer,
                other,
                reason,
            });
            // Each peer's health checks give up on it 40-60% into the stall, so that its close
            // gives up too (after `linger`) before the stall ends.
            let at = stall.start + stall_rounds * (4 + random(&mut rng, 3)) / 10;
            let reason = DisconnectReason::NetworkHealthCheckFailure;
            events[at].push(Event::Recycle {
                closer: other,
                other: stalled,
                reason,
            });
        }
        events[stall.end].push(Event::Resume);
        Plan {
            validators,
            rounds,
            interval,
            vote_size: 1024,
            seed,
            stall,
            events,
        }
    }

    /// The validator that stalls.
    pub(crate) fn stalled(&self) -> usize {
        self.validators - 1
    }

    /// Scheduled closes, the stall's included.
    pub(crate) fn closes(&self) -> usize {
        let is_close = |e: &&Event| matches!(e, Event::Recycle { .. });
        self.events
            .iter()
            .map(|ev| ev.iter().filter(is_close).count())
            .sum()
    }
}

/// xorshift64*: reproducible from the seed, and enough for a schedule.
fn random(state: &mut u64, below: usize) -> usize {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % below as u64) as usize
}

/// A connected loopback TCP pair with [`SOCKET_BUFFER`]-sized buffers on both sockets.
pub(crate) fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let socket = || -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_send_buffer_size(SOCKET_BUFFER)?;
        s.set_recv_buffer_size(SOCKET_BUFFER)?;
        Ok(s)
    };
    let listener = socket()?;
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    listener.bind(&any_port.into())?;
    listener.listen(1)?;
    let client = socket()?;
    client.connect(&listener.local_addr()?)?;
    // The accepted socket inherits the listener's buffer sizes.
    let (server, _) = listener.accept()?;
    Ok((client.into(), server.into()))
}
