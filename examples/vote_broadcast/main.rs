//! The audit report's scenario: validators on loopback broadcast a vote each round while
//! connections are recycled at random moments (graceful disconnects, redials that collide with
//! the other side's, one validator that stops answering health-check pings until its peers drop
//! it). Every vote is accounted for: sent (accepted by a broadcast), delivered (taken from the
//! receiver's handler queue), abandoned (its receipt says so) and silently lost = sent -
//! delivered - abandoned, which must be 0 (the async original drops votes queued at a close).
//!
//! Run: `cargo run --release --example vote_broadcast -- [--rounds N] [--validators N] [--seed N]`
//! (defaults: 2000 rounds of 5 ms, 4 validators, seed 1). Exits non-zero if a vote is lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use syncpeer::keyed::{self, QueueStyle};
use syncpeer::network::{HealthCheckConfig, NetworkEvent};
use syncpeer::{Bytes, Delivery::Abandoned, DisconnectReason as Reason, Network, NetworkConfig};
use syncpeer::{PeerConfig, PeerId, ProtocolId, Receipt};

const VOTES: ProtocolId = ProtocolId(1); // ConsensusDirectSendBcs in the original's numbering
static DELIVERED: AtomicU64 = AtomicU64::new(0);

fn arg(name: &str, default: u64) -> u64 {
    let value = std::env::args().skip_while(|a| a != name).nth(1);
    value.map_or(default, |v| v.parse().expect("a number"))
}

/// xorshift64*: enough randomness for chaos, reproducible from `--seed`.
fn rand(state: &mut u64, below: usize) -> usize {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % below as u64) as usize
}

/// Microseconds, up to a minute (values beyond are clamped, never dropped).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn row(name: &str, r: [i64; 4]) {
    let [sent, delivered, abandoned, lost] = r;
    println!("{name:<10} {sent:>9} {delivered:>10} {abandoned:>10} {lost:>14}");
}

fn main() {
    env_logger::init();
    let (rounds, n) = (arg("--rounds", 2000), arg("--validators", 4) as usize);
    let (mut seed, ms) = (arg("--seed", 1) | 1, Duration::from_millis);
    let epoch = Instant::now();
    let ids: Vec<PeerId> = (1..=n as u8).map(|i| PeerId([i; 32])).collect();
    let (mut health, mut config) = (HealthCheckConfig::default(), NetworkConfig::default());
    (health.interval, health.timeout, health.failures_tolerated) = (ms(100), ms(200), 2);
    config.health_check = Some(health);
    let peer_config = PeerConfig {
        linger: ms(2000),
        ..Default::default()
    };
    let (mut nets, mut addrs, mut consumers) = (Vec::new(), Vec::new(), Vec::new());
    for id in &ids {
        // A fair sink: one FIFO sub-queue per (peer, protocol), served round-robin.
        let (tx, rx) = keyed::channel(QueueStyle::Fifo, 1 << 20).expect("capacity");
        let net = Network::builder(*id).handler(VOTES, tx);
        let net = net.config(config.clone()).peer_config(peer_config.clone());
        let net = net.build().expect("network");
        addrs.push(net.listen("127.0.0.1:0").expect("listen"));
        nets.push(net);
        // The validator's consensus thread; it ends once its network has shut down.
        consumers.push(thread::spawn(move || {
            let (mut from, mut hist) = (vec![0i64; n], histogram());
            while let Ok(((peer, _), vote)) = rx.recv() {
                let at = u64::from_le_bytes(vote.data()[..8].try_into().expect("timestamp"));
                let now = epoch.elapsed().as_nanos() as u64;
                hist.saturating_record(now.saturating_sub(at) / 1000);
                from[usize::from(peer.0[0]) - 1] += 1;
                DELIVERED.fetch_add(1, Relaxed);
            }
            (from, hist)
        }));
    }
    let (recycled, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    let mut receipts: Vec<Vec<Receipt>> = (0..n).map(|_| Vec::new()).collect();
    let start = Instant::now();
    thread::scope(|s| {
        // Connection chaos, and a connectivity manager that redials every missing peer.
        s.spawn(|| {
            let silent = start + ms(2000)..start + ms(3500);
            while !stop.load(Relaxed) {
                thread::sleep(ms(20 + rand(&mut seed, 150) as u64));
                let (i, j) = (rand(&mut seed, n), rand(&mut seed, n));
                if i != j && rand(&mut seed, 2) == 0 {
                    let report = nets[i].disconnect(ids[j], Reason::RequestedByPeerManager);
                    recycled.fetch_add(report.is_some() as u64, Relaxed);
                }
                // The last validator stops answering pings for 1.5 s: its peers drop it.
                nets[n - 1].set_answer_pings(!silent.contains(&Instant::now()));
                for (i, net) in nets.iter().enumerate() {
                    for j in (0..n).filter(|&j| j != i && net.peer(ids[j]).is_none()) {
                        let _ = net.connect(addrs[j]); // both ends may dial at once: a collision
                    }
                }
            }
        });
        for round in 0..rounds {
            for (i, net) in nets.iter().enumerate() {
                let mut vote = (epoch.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
                vote.extend_from_slice(&round.to_le_bytes());
                let outcomes = net.broadcast_with_receipts(VOTES, Bytes::from(vote));
                receipts[i].extend(outcomes.into_iter().filter_map(|(_, r)| r.ok()));
            }
            if round % 100 == 0 {
                let sent: usize = receipts.iter().map(Vec::len).sum();
                let (got, cut) = (DELIVERED.load(Relaxed), recycled.load(Relaxed));
                eprint!("\rround {round}/{rounds}: sent {sent}, delivered {got}, cut {cut}");
            }
            let due = start + ms(5 * (round + 1));
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        stop.store(true, Relaxed);
    });
    // Close everything gracefully, then account for every vote.
    let events: Vec<_> = nets.iter().map(Network::events).collect();
    nets.into_iter().for_each(|net| drop(net.shutdown()));
    let (mut unhealthy, mut replaced, mut reported) = (0, 0, 0);
    for e in events.iter().flat_map(|rx| rx.iter()) {
        let Some(report) = e.report() else { continue };
        reported += report.messages_abandoned;
        unhealthy += (report.reason == Reason::NetworkHealthCheckFailure) as u32;
        replaced += matches!(e, NetworkEvent::Replaced { .. }) as u32;
    }
    let (mut latency, mut delivered) = (histogram(), vec![0i64; n]);
    for c in consumers {
        let (from, hist) = c.join().expect("consumer thread");
        latency.add(hist).expect("same bounds");
        delivered.iter_mut().zip(from).for_each(|(d, f)| *d += f);
    }
    println!("\nvalidator       sent  delivered  abandoned  silently lost");
    let mut total = [0i64; 4];
    for (i, rs) in receipts.iter().enumerate() {
        // Every receipt is resolved by now: the networks have closed every connection.
        let abandoned = rs.iter().filter(|r| r.wait() == Abandoned).count() as i64;
        let (sent, got) = (rs.len() as i64, delivered[i]);
        let counts = [sent, got, abandoned, sent - got - abandoned];
        row(&format!("v{}", i + 1), counts);
        total.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
    }
    row("total", total);
    let q = |q| latency.value_at_quantile(q);
    let (p50, p99, max) = (q(0.5), q(0.99), latency.max());
    println!("delivery latency: p50 {p50} us, p99 {p99} us, max {max} us");
    let recycled = recycled.load(Relaxed);
    println!("disconnects: {recycled} requested, {unhealthy} failed health checks");
    println!("dial collisions: {replaced} current connections replaced");
    println!("drain reports of all connections: {reported} messages abandoned");
    if total[3] != 0 {
        eprintln!("FAIL: {} votes silently lost", total[3]);
        std::process::exit(1);
    }
}
