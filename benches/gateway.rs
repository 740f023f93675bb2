//! Micro-benchmarks of the hot paths: encoding a message frame, decoding client frames,
//! fanning one message out to 10,000 local subscribers, and the per-message Redis read path.
//!
//! `cargo bench --bench gateway`; results and the machine they ran on are in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use fanout::broker::{ChannelRules, MemoryBroker, Publication, decode_redis_message};
use fanout::channel::Channel;
use fanout::hub::Hub;
use fanout::metrics::Metrics;
use fanout::node::Inlet;
use fanout::outbox::Outbox;
use fanout::protocol::{PayloadInfo, message_frame_with, parse_client_frame};

fn payload(bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"type":"node_state","data":{{"node_id":"n3","state":"running","pad":"{}"}},"timestamp":1732226400}}"#,
        "x".repeat(bytes)
    )
    .into_bytes()
}

fn encode(c: &mut Criterion) {
    let channel = Channel::parse("dag:7").unwrap();
    let epoch: Arc<str> = "6741b2a0c3f1a".into();
    let mut group = c.benchmark_group("encode_message_frame");
    for size in [100, 1_000, 10_000] {
        let p = payload(size);
        group.throughput(Throughput::Bytes(p.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &p, |b, p| {
            b.iter(|| {
                let info = PayloadInfo::of(p);
                message_frame_with(&channel, p, info.is_json, Some((41, &epoch)), None)
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_client_frame");
    let frames = [
        ("ping", r#"{"type":"ping","id":7}"#.to_owned()),
        ("subscribe_since", r#"{"type":"subscribe","channel":"dag:7","id":"s1","since":{"offset":41,"epoch":"6741b2a0c3f1a"}}"#.to_owned()),
        ("publish_1k", format!(r#"{{"type":"publish","channel":"room:lobby","data":{}}}"#, String::from_utf8(payload(1_000)).unwrap())),
    ];
    for (name, frame) in &frames {
        group.bench_function(*name, |b| b.iter(|| parse_client_frame(frame)));
    }
    group.finish();
}

/// A hub with `n` local subscribers of one channel, on the in-process broker.
fn hub_with_subscribers(n: usize, channel: &Channel) -> (Arc<Hub>, Vec<Arc<Outbox>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The hub is fed directly here; the broker only answers its subscribes.
        let broker = MemoryBroker::new(Arc::new(Inlet::default()), ChannelRules::default());
        let hub = Hub::new(Arc::new(Metrics::new()), 1024, Arc::new(broker));
        let mut outboxes = Vec::with_capacity(n);
        for conn in 0..n as u64 {
            let outbox = Arc::new(Outbox::new(1 << 20, 1 << 30));
            hub.subscribe(conn, &outbox, std::slice::from_ref(channel), None)
                .await
                .unwrap();
            outboxes.push(outbox);
        }
        (hub, outboxes)
    })
}

/// Empties the outboxes between measured batches (not timed).
fn drain(outboxes: &[Arc<Outbox>]) {
    let mut sink = Vec::new();
    for o in outboxes {
        o.take_batch(&mut sink, usize::MAX);
        sink.clear();
    }
}

fn fan_out(c: &mut Criterion) {
    let channel = Channel::parse("room:lobby").unwrap();
    let (hub, outboxes) = hub_with_subscribers(10_000, &channel);
    let publication = Publication::new(channel.clone(), Bytes::from(payload(100)));
    let mut group = c.benchmark_group("fan_out");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("one_message_to_10k_subscribers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                hub.deliver(&publication);
                total += start.elapsed();
                drain(&outboxes);
            }
            total
        })
    });
    group.finish();
}

fn redis_read_path(c: &mut Criterion) {
    let channel = Channel::parse("dag:7").unwrap();
    let (hub, outboxes) = hub_with_subscribers(100, &channel);
    let mut raw = b"\0h6741b2a0c3f1a\x0041\0\0".to_vec();
    raw.extend_from_slice(&payload(100));
    let mut group = c.benchmark_group("redis_read_path");
    group.bench_function("decode_only", |b| {
        b.iter(|| decode_redis_message("fanout:", "fanout:dag:7", &raw, 262_144))
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("decode_and_deliver_to_100", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                if let Ok(p) = decode_redis_message("fanout:", "fanout:dag:7", &raw, 262_144) {
                    hub.deliver(&p);
                }
                total += start.elapsed();
                drain(&outboxes);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, encode, decode, fan_out, redis_read_path);
criterion_main!(benches);
