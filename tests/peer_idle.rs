//! The reader and the mux poll for `PeerConfig::spin` after their last input before they park:
//! an idle connection must then cost no CPU. Alone in its test binary, so that the threads it
//! measures are only its own peers'.

mod common;

use std::time::Duration;

use common::*;
use syncpeer::{DisconnectReason, Inbound, PeerConfig};

/// CPU time (user + system, in clock ticks) used so far by this process's connection threads.
fn connection_cpu_ticks() -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task entry").path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread has just ended
        };
        if !name.starts_with("syncpeer-") {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the command name (which is in parentheses): utime and stime are the
        // 14th and 15th fields of the whole line.
        let rest = &stat[stat.rfind(')').expect("comm field") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    ticks
}

#[test]
fn idle_connections_cost_no_cpu_after_spinning() {
    let config = PeerConfig {
        spin: Duration::from_millis(1),
        ..PeerConfig::default()
    };
    let pairs: Vec<_> = (0..4)
        .map(|_| pair_with(Transport::Tcp, config.clone(), 64))
        .collect();
    // Traffic of every kind, so that every thread has spun at least once.
    for (a, b) in &pairs {
        // Fewer than the handler channel holds: none is dropped.
        for i in 0..50 {
            a.handle.send(DIRECT, numbered(i, 32)).unwrap();
        }
        for _ in 0..50 {
            recv(b);
        }
        let h = a.handle.clone();
        let caller = std::thread::spawn(move || h.rpc(RPC, numbered(0, 8), WAIT));
        match recv(b) {
            Inbound::Request {
                data, responder, ..
            } => responder.respond(data).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
        within("rpc", WAIT, move || caller.join().unwrap()).unwrap();
    }
    // Past every spin, then a second of idleness: 24 threads parked cost at most a tick or
    // two of bookkeeping; one that kept polling would cost about a hundred.
    std::thread::sleep(Duration::from_millis(50));
    let before = connection_cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let used = connection_cpu_ticks() - before;
    assert!(used <= 5, "idle connections used {used} ticks in a second");
    for (a, b) in pairs {
        within("close", WAIT, move || {
            a.handle
                .shutdown(DisconnectReason::RequestedByPeerManager)
                .unwrap();
            b.handle.join().unwrap()
        });
    }
}
