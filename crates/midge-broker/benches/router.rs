//! Routing one PUBLISH: the subscription tree walk, the merge of a session's matches and the
//! queueing into each subscriber's mailbox, as `midge bench` scenarios load it.
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use midge_broker::mailbox::SessionHandle;
use midge_broker::router::Router;
use midge_broker::session::Message;
use midge_codec::{Properties, QoS, SubscriptionOptions};

fn handle(id: String) -> Arc<SessionHandle> {
    let h = SessionHandle::new(ByteString::from(id), 1_000_000);
    h.set_online(true);
    h
}

fn message(topic: &str) -> Arc<Message> {
    Arc::new(Message::from_publish(
        topic.into(),
        Bytes::from_static(&[0u8; 64]),
        QoS::AtMostOnce,
        false,
        Properties::new(),
        "publisher".into(),
        Instant::now(),
    ))
}

/// Routes `topic` repeatedly; the mailboxes of its `receivers` are drained between batches.
fn bench_route(
    c: &mut Criterion,
    name: &str,
    router: &Router,
    receivers: &[Arc<SessionHandle>],
    topic: &str,
) {
    let m = message(topic);
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    // Drained as a connection drains them: the queues keep their memory, as under load.
    let mut scratch = std::collections::VecDeque::new();
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                for h in receivers {
                    h.mailbox.drain_into(&mut scratch, usize::MAX);
                }
                scratch.clear();
            },
            |()| black_box(router.route(black_box(&m), None)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let qos0 = SubscriptionOptions::qos(QoS::AtMostOnce);

    // pairs: 1,000 subscribers, each to its own topic (three levels).
    let router = Router::new();
    let handles: Vec<_> = (0..1000).map(|i| handle(format!("sub-{i}"))).collect();
    for (i, h) in handles.iter().enumerate() {
        router.subscribe(h, &format!("bench/{i}/data"), qos0, None);
    }
    bench_route(c, "pairs_1000_topics", &router, &handles[500..501], "bench/500/data");

    // fan-in: the same, plus one wildcard subscriber that gets everything.
    let all = handle("all".into());
    router.subscribe(&all, "bench/#", qos0, None);
    bench_route(c, "fan_in_wildcard", &router, &[handles[500].clone(), all], "bench/500/data");

    // fan-out: 16 subscribers to one topic.
    let router = Router::new();
    let handles: Vec<_> = (0..16).map(|i| handle(format!("out-{i}"))).collect();
    for h in &handles {
        router.subscribe(h, "bench/fan/out", qos0, None);
    }
    bench_route(c, "fan_out_16", &router, &handles, "bench/fan/out");
}

criterion_group!(benches, routing);
criterion_main!(benches);
