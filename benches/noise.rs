//! Micro-benchmarks of the Noise transport: encrypting with a `NoiseWriter` and decrypting with
//! a `NoiseReader`, for one 64-byte frame per call (an idle connection's writer), a batch of 64
//! such frames per call (a busy one), and 1 MiB; plus the handshake itself. Throughput is in
//! plaintext bytes.
//!
//! Run: `cargo bench --bench noise` (about a minute).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use syncpeer::PeerId;
use syncpeer::noise::{
    AuthMode, Initiator, NoiseConfig, NoiseReader, NoiseWriter, Responder, StaticKeypair,
    TrustedPeers,
};

fn configs() -> (NoiseConfig, NoiseConfig) {
    let trusted = TrustedPeers::new();
    let make = |seed: u8, id: u64| {
        let key = StaticKeypair::from_private_bytes([seed; 32]);
        trusted.insert(PeerId::from_u64(id), [key.public_key()]);
        NoiseConfig::new(key, PeerId::from_u64(id), AuthMode::Mutual, trusted.clone())
    };
    (make(1, 1), make(2, 2))
}

/// One handshake; the client's writer and the server's reader.
fn pair(client: &NoiseConfig, server: &NoiseConfig, now: SystemTime) -> (NoiseWriter, NoiseReader) {
    let init = Initiator::new(client, server.peer_id(), server.public_key(), now).unwrap();
    let mut resp = Responder::new(server);
    resp.read(init.first_message());
    let accepted = resp.accept().unwrap();
    let mut init = init;
    init.read(&accepted.response);
    let (writer, _) = init.finish().unwrap().split();
    let (_, reader) = accepted.session.split();
    (writer, reader)
}

fn transport(c: &mut Criterion) {
    let (client, server) = configs();
    let frame = [0x5a_u8; 64];
    let mib = vec![0xa5_u8; 1 << 20];
    let batch: Vec<&[u8]> = (0..64).map(|_| &frame[..]).collect();
    let cases: [(&str, Vec<&[u8]>); 3] = [
        ("64B", vec![&frame[..]]),
        ("64Bx64", batch),
        ("1MiB", vec![&mib[..]]),
    ];
    let mut now = SystemTime::now();
    for (label, parts) in cases {
        let bytes: usize = parts.iter().map(|p| p.len()).sum();
        let mut g = c.benchmark_group("noise");
        g.throughput(Throughput::Bytes(bytes as u64));
        if bytes > 4096 {
            g.measurement_time(Duration::from_secs(4));
        }
        now += Duration::from_millis(1);
        let (mut writer, _) = pair(&client, &server, now);
        g.bench_with_input(BenchmarkId::new("encrypt", label), &parts, |b, parts| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                writer
                    .encrypt(black_box(parts).iter().copied(), &mut out)
                    .unwrap();
                black_box(&out);
            });
        });
        now += Duration::from_millis(1);
        let (mut writer, mut reader) = pair(&client, &server, now);
        g.bench_with_input(BenchmarkId::new("decrypt", label), &parts, |b, parts| {
            let mut plain = BytesMut::new();
            // Sealed in setup, in order, so every message opens with the next nonce.
            b.iter_batched(
                || {
                    let mut wire = BytesMut::new();
                    writer.encrypt(parts.iter().copied(), &mut wire).unwrap();
                    wire
                },
                |wire| {
                    plain.clear();
                    reader
                        .decrypt(black_box(&wire), &mut plain)
                        .unwrap()
                        .unwrap();
                    black_box(&plain);
                },
                BatchSize::LargeInput,
            );
        });
        now += Duration::from_millis(1);
        let (mut writer, mut reader) = pair(&client, &server, now);
        g.bench_with_input(BenchmarkId::new("round_trip", label), &parts, |b, parts| {
            let (mut wire, mut plain) = (BytesMut::new(), BytesMut::new());
            b.iter(|| {
                wire.clear();
                plain.clear();
                writer
                    .encrypt(black_box(parts).iter().copied(), &mut wire)
                    .unwrap();
                reader.decrypt(&wire, &mut plain).unwrap().unwrap();
                black_box(&plain);
            });
        });
        g.finish();
    }
}

fn handshake(c: &mut Criterion) {
    let (client, server) = configs();
    let mut ms = 0u64;
    c.bench_function("noise/handshake", |b| {
        b.iter(|| {
            // Each handshake needs a newer timestamp (mutual mode refuses replays).
            ms += 1;
            let now = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            black_box(pair(&client, &server, now))
        });
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    transport(&mut c);
    handshake(&mut c);
    c.final_summary();
}
