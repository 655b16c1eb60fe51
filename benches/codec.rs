//! Micro-benchmarks of the sans-IO core: encoding and decoding one `DirectSendMsg` frame, and
//! cutting a large message into a stream and putting it back together. Each case is measured
//! twice, once reported in bytes per second and once in messages per second.
//!
//! Run: `cargo bench --bench codec` (about a minute).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput};
use syncpeer::proto::{
    DirectSendMsg, FrameDecoder, MultiplexMessage, NetworkMessage, OutboundStream, ProtocolId,
    Reassembler, StreamId, encode_frame,
};

/// The `PeerConfig` defaults.
const MAX_FRAME: usize = 4 << 20;
const MAX_MESSAGE: usize = 64 << 20;

fn direct(len: usize) -> NetworkMessage {
    NetworkMessage::DirectSendMsg(DirectSendMsg {
        protocol_id: ProtocolId(2),
        priority: 0,
        raw_msg: (0..len).map(|i| (i * 31) as u8).collect::<Vec<_>>().into(),
    })
}

/// Reported once as bytes per second and once as messages per second.
fn throughputs(bytes: usize) -> [(&'static str, Throughput); 2] {
    [
        ("bytes", Throughput::Bytes(bytes as u64)),
        ("msgs", Throughput::Elements(1)),
    ]
}

fn frames(c: &mut Criterion) {
    let cases = [("64B", 64), ("4KiB", 4 << 10), ("1MiB", 1 << 20)];
    for (label, len) in cases {
        let msg = MultiplexMessage::Message(direct(len));
        let mut encoded = BytesMut::new();
        encode_frame(&msg, MAX_FRAME, &mut encoded).unwrap();
        let encoded = encoded.freeze();
        for (unit, throughput) in throughputs(encoded.len()) {
            let mut g = c.benchmark_group(format!("frame_{unit}"));
            g.throughput(throughput);
            g.bench_with_input(BenchmarkId::new("encode", label), &msg, |b, msg| {
                let mut out = BytesMut::with_capacity(encoded.len());
                b.iter(|| {
                    out.clear();
                    encode_frame(black_box(msg), MAX_FRAME, &mut out).unwrap();
                    black_box(&out);
                });
            });
            g.bench_with_input(BenchmarkId::new("decode", label), &encoded, |b, bytes| {
                let mut d = FrameDecoder::new(MAX_FRAME);
                b.iter(|| {
                    d.extend(black_box(bytes));
                    black_box(d.decode().unwrap().unwrap())
                });
            });
            g.finish();
        }
    }
}

/// Fragments `message` and reassembles it: the header and fragment slices share the input, and
/// the reassembler copies each payload byte once.
fn round_trip(message: &NetworkMessage) -> NetworkMessage {
    let stream = OutboundStream::new(StreamId(0), message.clone(), MAX_FRAME, MAX_MESSAGE).unwrap();
    let mut r = Reassembler::new(MAX_FRAME, MAX_MESSAGE);
    let mut done = None;
    for frame in stream {
        let MultiplexMessage::Stream(s) = frame else {
            unreachable!("a stream yields stream frames")
        };
        done = r.handle(s).unwrap();
    }
    done.expect("the last fragment completes the message")
}

fn streams(c: &mut Criterion) {
    for (label, len) in [("4MiB", 4 << 20), ("64MiB", 64 << 20)] {
        let message = direct(len);
        assert_eq!(round_trip(&message), message);
        for (unit, throughput) in throughputs(len) {
            let mut g = c.benchmark_group(format!("stream_{unit}"));
            g.sample_size(10);
            g.throughput(throughput);
            g.bench_with_input(
                BenchmarkId::new("fragment_reassemble", label),
                &message,
                |b, m| {
                    b.iter(|| black_box(round_trip(black_box(m))));
                },
            );
            g.finish();
        }
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

fn main() {
    let mut c = config().configure_from_args();
    frames(&mut c);
    streams(&mut c);
    c.final_summary();
}
