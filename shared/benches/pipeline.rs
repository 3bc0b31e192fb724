//! CPU cost of the receiver per request, with in-memory claims and queue (the AWS round trips
//! are measured by the load run, `make load`). Budget: well under 1 ms per accepted event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lambda_http::http::{HeaderMap, HeaderValue, Method};
use shared::clock::SystemClock;
use shared::config::{Env, Settings};
use shared::providers::trybe::{self, Trybe};
use shared::queue::MemoryQueue;
use shared::secret::{Secret, SecretList};
use shared::store::MemoryClaims;
use shared::Receiver;

const SECRET: &str = "trybe-bench-secret-0001";

fn body(id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"evt-{id}","event":"basket.submitted","timestamp":"2024-08-19T16:10:02+00:00","webhook_config_id":"66ba3d8f13e43589da030ad8","site_id":"00000000-0000-0000-0000-111111111111","data":{{"id":"66c36dfe5b1c2a0e4f0d9a11","status":"submitted","items":[{{"id":"i1","offering_name":"Deep Tissue Massage (60 min)","price":9500}}],"total_cost":9500}}}}"#
    )
    .into_bytes()
}

fn headers(body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "signature",
        HeaderValue::from_str(&trybe::sign(&Secret::new(SECRET).unwrap(), body)).unwrap(),
    );
    h
}

fn receiver() -> Receiver<Trybe> {
    let settings = Settings::from_env(&Env::from_pairs([
        ("EVENTS_TABLE", "t"),
        ("EVENTS_QUEUE_URL", "q"),
    ]))
    .expect("default settings");
    Receiver::new(
        Trybe::new(SecretList::parse(SECRET).unwrap()),
        Arc::new(MemoryClaims::default()),
        Arc::new(MemoryQueue::default()),
        settings,
        Arc::new(SystemClock),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let r = receiver();
    let mut group = c.benchmark_group("receiver");
    group.throughput(Throughput::Elements(1));

    // Signing happens outside the timed section: only the receiver's work is measured.
    let next = AtomicU64::new(0);
    group.bench_function("accept_new_event", |b| {
        b.iter_batched(
            || {
                let body = body(next.fetch_add(1, Ordering::Relaxed));
                (headers(&body), body)
            },
            |(h, body)| {
                let answer = rt.block_on(r.answer_parts(&Method::POST, &h, "/", None, &body));
                assert_eq!(answer.status(), 200);
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let dup = body(u64::MAX);
    let dup_headers = headers(&dup);
    rt.block_on(r.answer_parts(&Method::POST, &dup_headers, "/", None, &dup));
    group.bench_function("duplicate", |b| {
        b.iter(|| rt.block_on(r.answer_parts(&Method::POST, &dup_headers, "/", None, &dup)))
    });

    let mut forged = dup_headers.clone();
    forged.insert(
        "signature",
        HeaderValue::from_static(
            "00000000000000000000000000000000000000000000000000000000000000ff",
        ),
    );
    group.bench_function("reject_forged_signature", |b| {
        b.iter(|| rt.block_on(r.answer_parts(&Method::POST, &forged, "/", None, &dup)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
