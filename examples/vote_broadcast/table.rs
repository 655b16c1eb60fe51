//! What the main job prints on stdout: what it is about to run, then one table row per
//! system, the same for the connections closed to the stalled validator, one sentence that
//! says what the table shows, and a legend.

use crate::plan::{LINGER, Plan, STALL};
use crate::workload::{Counts, Outcome};

/// Names the stalled validator as the table does (`v1` is the first).
fn name(v: usize) -> String {
    format!("v{}", v + 1)
}

pub(crate) fn intro(plan: &Plan) {
    let (n, s) = (plan.validators, name(plan.stalled()));
    let (connections, ms) = (n * (n - 1) / 2, plan.interval.as_millis());
    let (rounds, seed, size) = (plan.rounds, plan.seed, plan.vote_size);
    let (stall, linger) = (STALL.as_secs_f64(), LINGER.as_millis());
    let (first, last) = (plan.stall.start, plan.stall.end - 1);
    let random = plan.closes() - 2 * (n - 1);
    println!(
        "{n} validators on loopback, each connected to every other ({connections} connections), \
         {rounds} rounds of {ms} ms,\nseed {seed}. Every round each validator sends a {size} B \
         vote on each of its connections.\n\
         Right after a round's votes were sent, so with votes still queued, connections are \
         closed\ngracefully and a new one replaces each: {random} times at random, {} times \
         when {s} stalls, {} times\nwhen its peers' health checks give up on it.\n\
         {s} stalls for {stall:.1} s (rounds {first}-{last}): it reads and sends nothing, and \
         its peers' votes to it\npile up. Graceful closes may take linger = {linger} ms to \
         deliver what is queued.\n\
         The same rounds and schedule run through the original's architecture (async,\n\
         tests/support/async_peer.rs), then through syncpeer.\n",
        n - 1,
        n - 1
    );
}

fn row(system: &str, c: &Counts) {
    let abandoned = c
        .abandoned
        .map_or("0 (none)".to_string(), |a| a.to_string());
    let (sent, delivered, lost) = (c.sent, c.delivered, c.silently_lost());
    println!("{system:<24} {sent:>10} {delivered:>10} {abandoned:>19} {lost:>14}");
}

fn header(title: &str) {
    println!(
        "{title:<24} {:>10} {:>10} {:>19} {:>14}",
        "votes sent", "delivered", "reported abandoned", "silently lost"
    );
}

pub(crate) fn results(plan: &Plan, original: &Outcome, syncpeer: &Outcome) {
    header("all connections");
    row("the original (async)", &original.all);
    row("syncpeer", &syncpeer.all);
    println!();
    header(&format!("closed to stalled {}", name(plan.stalled())));
    row("the original (async)", &original.to_stalled);
    row("syncpeer", &syncpeer.to_stalled);
    let (s, o) = (&syncpeer.all, &original.all);
    let (abandoned, reported) = (s.abandoned.unwrap_or(0), s.reported.unwrap_or(0));
    let agree = match abandoned == reported {
        true => "the same count",
        false => "A DIFFERENT COUNT",
    };
    print_wrapped(
        "",
        &format!(
            "syncpeer's receipts resolved {abandoned} votes as Abandoned; its drain reports \
             counted {reported} messages abandoned: {agree}."
        ),
    );
    let stalled = name(plan.stalled());
    let to_stalled = syncpeer.to_stalled.abandoned.unwrap_or(0);
    let where_ = match (abandoned, to_stalled == abandoned) {
        (0, _) => String::new(),
        (_, true) => format!(", all on connections to the stalled {stalled}"),
        (_, false) => format!(", {to_stalled} of them to the stalled {stalled}"),
    };
    let original_said = match o.silently_lost() {
        0 => "The original lost no vote this time (its close race did not strike)".to_string(),
        lost => format!("The original lost {lost} votes without telling anyone"),
    };
    let syncpeer_said = match s.silently_lost() {
        0 => format!(
            "syncpeer lost none: it delivered {} and reported each of the {abandoned} it could \
             not deliver{where_}.",
            s.delivered
        ),
        lost => format!("syncpeer lost {lost} votes silently: that is a bug."),
    };
    println!();
    print_wrapped("", &format!("{original_said}; {syncpeer_said}"));
    println!();
    legend(original, syncpeer);
}

/// Prints `text` in lines of at most [`WIDTH`] characters, the first one starting with
/// `term` and every one indented past it.
fn print_wrapped(term: &str, text: &str) {
    let indent = if term.is_empty() { 0 } else { 22 };
    let mut line = format!("{:indent$}", if term.is_empty() { "" } else { term });
    let mut empty = true;
    for word in text.split(' ') {
        if !empty && line.len() + 1 + word.len() > WIDTH {
            println!("{line}");
            (line, empty) = (" ".repeat(indent), true);
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    println!("{line}");
}

/// Widest line of the sentence and the legend.
const WIDTH: usize = 94;

fn legend(original: &Outcome, syncpeer: &Outcome) {
    let (ro, rs) = (original.all.refused, syncpeer.all.refused);
    let refused = format!(
        "votes a connection accepted from its validator. A send that finds the connection's \
         queue full refuses the vote at once, and the sender keeps it: that happened {ro} \
         times with the original, {rs} with syncpeer."
    );
    let lines = [
        ("votes sent", refused.as_str()),
        ("delivered", "votes the receiving validator got."),
        (
            "reported abandoned",
            "votes the sender was told will never be delivered. syncpeer resolves each vote's \
             receipt (Written or Abandoned) and counts the abandoned ones in the close's drain \
             report. The original has no such report.",
        ),
        (
            "silently lost",
            "sent - delivered - reported abandoned: votes that are gone, and nobody was told.",
        ),
        (
            "linger",
            "how long a graceful close may take to deliver what is queued before it gives up on \
             the rest (syncpeer's PeerConfig::linger, 5 s by default).",
        ),
    ];
    println!("legend:");
    for (term, text) in lines {
        print_wrapped(&format!("  {term}"), text);
    }
}
