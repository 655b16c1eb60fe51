//! The main job: the audit report's scenario, consensus votes lost when a connection closes,
//! run through the async original's architecture and through syncpeer, one after the other.
//!
//! Four validators on loopback, each connected to every other. Every round (5 ms) each one
//! sends a 1 KiB vote on each of its connections. A schedule drawn from the seed closes
//! connections gracefully right after a round's votes were sent, with those votes still
//! queued, and opens new ones in their place. And the last validator stalls for 2 s: it
//! reads and sends nothing, its peers' votes to it pile up, and their health checks give up
//! and close those connections while the votes are still queued, more than can be delivered
//! within `linger` (500 ms here). Both systems run the same rounds and the same schedule; then
//! one table counts every vote: sent, delivered, reported abandoned, silently lost.
//!
//! Run: `cargo run --release --example vote_broadcast -- [--rounds N] [--seed N]`
//! (defaults: 1500 rounds, seed 1; about 15 s). Exits non-zero only if syncpeer loses a vote.
//! Progress goes to stderr when it is a terminal; the results go to stdout. `RUST_LOG=debug`
//! shows every connection's life.

#[path = "../../tests/support/async_peer.rs"]
mod async_peer;
mod mesh;
mod original_side;
mod plan;
mod syncpeer_side;
mod table;
mod workload;

use std::io::{IsTerminal, Write};

use syncpeer::ProtocolId;

use plan::Plan;
use workload::{Outcome, System};

/// The protocol of votes (`ConsensusDirectSendBcs` in the original's numbering).
const VOTES: ProtocolId = ProtocolId(1);

fn arg(name: &str, default: usize) -> usize {
    let value = std::env::args().skip_while(|a| a != name).nth(1);
    value.map_or(default, |v| v.parse().expect("a number"))
}

/// Runs `system`, drawing a progress line on stderr if it is a terminal.
fn run(plan: &Plan, name: &str, system: impl System) -> Outcome {
    let terminal = std::io::stderr().is_terminal();
    let mut progress = |round: usize| {
        if terminal && (round.is_multiple_of(25) || round + 1 == plan.rounds) {
            let done = (round + 1) * 30 / plan.rounds;
            let bar = format!("{}{}", "#".repeat(done), ".".repeat(30 - done));
            eprint!(
                "\r{name:<22} [{bar}] round {} of {}",
                round + 1,
                plan.rounds
            );
            let _ = std::io::stderr().flush();
        }
    };
    let outcome = workload::run(plan, system, &mut progress);
    if terminal {
        eprintln!(", done in {:.1} s", outcome.elapsed.as_secs_f64());
    }
    outcome
}

fn main() {
    // Quiet unless RUST_LOG says otherwise: the stalled validator's readers log an error, as
    // they should, for each vote cut short when its sender gave up on it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let rounds = arg("--rounds", 1500);
    if rounds < Plan::min_rounds() {
        eprintln!(
            "--rounds: at least {}, to fit the stall",
            Plan::min_rounds()
        );
        std::process::exit(2);
    }
    let plan = Plan::new(4, rounds, arg("--seed", 1) as u64);
    table::intro(&plan);
    let original = run(
        &plan,
        "the original (async)",
        original_side::Original::new(),
    );
    let syncpeer = run(&plan, "syncpeer", syncpeer_side::Syncpeer::new());
    table::results(&plan, &original, &syncpeer);
    let lost = syncpeer.all.silently_lost();
    if lost != 0 {
        eprintln!(
            "FAIL: syncpeer lost {lost} votes silently (seed {})",
            plan.seed
        );
        std::process::exit(1);
    }
}
