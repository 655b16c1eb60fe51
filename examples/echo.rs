//! Two processes over real TCP. `echo server ADDR` listens and echoes: a direct send comes back
//! as a direct send, an RPC request comes back as its response. `echo client ADDR` keeps the
//! server connected (dialing in the background, and again after a loss; start it before the
//! server if you like), waits for the connection, sends direct messages and RPCs, prints what
//! came back and the round-trip times, then disconnects gracefully and prints the connection's
//! drain report. ADDR may be a name (`localhost:4000`). `RUST_LOG=debug` shows the lifecycle:
//! dials, handshake, the three threads starting, drain, close, events.
//!
//! The connection runs inside Noise IK: the client dials the server's peer id and static key,
//! and the server, in maybe-mutual mode, lets in any client whose peer id is derived from its
//! key. Both keys are fixed here so that two processes agree without setup; a real node
//! generates its key once (`StaticKeypair::generate`) and keeps it.
//!
//! Run, in two terminals:
//! `RUST_LOG=debug cargo run --example echo -- server 127.0.0.1:4000`
//! `RUST_LOG=debug cargo run --example echo -- client 127.0.0.1:4000 [COUNT]`

use std::time::{Duration, Instant};

use crossbeam_channel::select;
use syncpeer::noise::{AuthMode, NoiseConfig, StaticKeypair, TrustedPeers};
use syncpeer::{Bytes, DisconnectReason, Inbound, Network, NetworkEvent, PeerId, ProtocolId};

const ECHO: ProtocolId = ProtocolId(2);
const ECHO_RPC: ProtocolId = ProtocolId(9);
const WAIT: Duration = Duration::from_secs(10);
const SERVER: PeerId = PeerId([0xee; 32]);
/// Demo keys, known to both processes. Never ship a fixed private key.
const SERVER_KEY: [u8; 32] = [0x5e; 32];
const CLIENT_KEY: [u8; 32] = [0xc1; 32];

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: echo server ADDR | echo client ADDR [COUNT]";
    let (mode, addr) = match &args[..] {
        [mode, addr, ..] => (mode.as_str(), addr.as_str()),
        _ => return Err(usage.into()),
    };
    let count = args.get(2).map_or(Ok(5), |c| c.parse())?;
    match mode {
        "server" => server(addr),
        "client" => client(addr, count),
        _ => Err(usage.into()),
    }
}

fn server(addr: &str) -> Result<(), Error> {
    let (tx, inbound) = crossbeam_channel::unbounded();
    let key = StaticKeypair::from_private_bytes(SERVER_KEY);
    let noise = NoiseConfig::new(key, SERVER, AuthMode::MaybeMutual, TrustedPeers::new());
    let net = Network::builder(SERVER)
        .noise(noise)
        .handler(ECHO, tx.clone())
        .handler(ECHO_RPC, tx)
        .build()?;
    let events = net.events();
    println!(
        "echo server {} on {}",
        net.local_peer_id(),
        net.listen(addr)?
    );
    loop {
        select! {
            recv(inbound) -> m => match m? {
                Inbound::Message { from, protocol, data } => {
                    log::info!("{from}: {} bytes on {protocol}, echoing", data.len());
                    if let Some(peer) = net.peer(from) {
                        // Hands the same buffer back: no copy.
                        if let Err(e) = peer.try_send(ECHO, data) {
                            log::warn!("{from}: echo not sent: {e}");
                        }
                    }
                }
                Inbound::Request { from, data, responder, .. } => {
                    log::info!("{from}: rpc of {} bytes, answering", data.len());
                    let _ = responder.respond(data);
                }
            },
            recv(events) -> e => match e? {
                NetworkEvent::Connected(p) => println!("{p} connected"),
                NetworkEvent::Disconnected { peer_id, reason, report } => println!(
                    "{peer_id} disconnected ({reason}): {} messages written, {} abandoned",
                    report.messages_written, report.messages_abandoned
                ),
                NetworkEvent::Replaced { peer_id, .. } => println!("{peer_id}: connection replaced"),
                other => log::debug!("{other:?}"), // dials: the server keeps no peer
            },
        }
    }
}

fn client(addr: &str, count: u32) -> Result<(), Error> {
    let (tx, inbound) = crossbeam_channel::unbounded();
    let key = StaticKeypair::from_private_bytes(CLIENT_KEY);
    // A stranger to the server: its peer id must be the one derived from its key.
    let me = key.public_key().derived_peer_id();
    let noise = NoiseConfig::new(key, me, AuthMode::MaybeMutual, TrustedPeers::new());
    let net = Network::builder(me)
        .noise(noise)
        .handler(ECHO, tx)
        .protocol(ECHO_RPC) // called, never served: announced without a handler
        .build()?;
    let server_key = StaticKeypair::from_private_bytes(SERVER_KEY).public_key();
    net.keep_connected(SERVER, addr, server_key)?;
    let peer = net.wait_for_peer(SERVER, Duration::from_secs(60))?;
    println!(
        "connected to {SERVER} at {addr}, protocols {:?}",
        peer.protocols()
    );
    let server = peer.peer_id();
    for i in 0..count {
        let started = Instant::now();
        peer.send(ECHO, Bytes::from(format!("hello {i}")))?;
        let echo = inbound.recv_timeout(WAIT)?;
        let text = String::from_utf8_lossy(echo.data());
        println!("direct send echoed: {text:?} in {:?}", started.elapsed());
    }
    for i in 0..count {
        let started = Instant::now();
        let response = peer.rpc(ECHO_RPC, Bytes::from(format!("call {i}")), WAIT)?;
        let text = String::from_utf8_lossy(&response);
        println!("rpc answered: {text:?} in {:?}", started.elapsed());
    }
    net.stop_keeping(server); // or it is redialed
    let report = net
        .disconnect(server, DisconnectReason::RequestedByPeerManager)
        .ok_or("already disconnected")?;
    println!(
        "closed: {} of {} messages written, {} abandoned, drained in {:?}",
        report.messages_written,
        report.messages_accepted,
        report.messages_abandoned,
        report.drain_duration
    );
    net.shutdown();
    Ok(())
}
