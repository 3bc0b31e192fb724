//! CPU cost of the receiver per request, with in-memory claims and queue (the AWS round trips
//! are measured by the load run, `make load`). Budget: well under 1 ms per accepted event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lambda_http::http::{HeaderMap, HeaderValue, Method};
use shared::clock::SystemClock;
use shared::config::{Env, Settings};
use shared::objects::{ObjectError, ObjectStore};
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

/// A bucket that takes every object and keeps none (criterion runs thousands of iterations):
/// what is measured is the receiver's own work to build and hand over each object.
struct Discard;

#[async_trait]
impl ObjectStore for Discard {
    async fn put(&self, _: &str, body: bytes::Bytes, _: &str) -> Result<(), ObjectError> {
        std::hint::black_box(body);
        Ok(())
    }
    async fn get(&self, _: &str, _: u64) -> Result<Vec<u8>, ObjectError> {
        Err(ObjectError::Missing)
    }
}

/// A Trybe body of about `bytes` bytes (a large note in `data`).
fn large_body(id: u64, bytes: usize) -> Vec<u8> {
    format!(
        r#"{{"id":"evt-{id}","event":"basket.submitted","site_id":"s1","data":{{"note":"{}"}}}}"#,
        "x".repeat(bytes)
    )
    .into_bytes()
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

    // The archive on: the same event, also serialized whole (body and envelope) for S3.
    let archived = receiver().with_objects(Some(Arc::new(Discard)), Some(Arc::new(Discard)));
    group.bench_function("accept_new_event_archived", |b| {
        b.iter_batched(
            || {
                let body = body(next.fetch_add(1, Ordering::Relaxed));
                (headers(&body), body)
            },
            |(h, body)| {
                let answer =
                    rt.block_on(archived.answer_parts(&Method::POST, &h, "/", None, &body));
                assert_eq!(answer.status(), 200);
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();

    // A 3 MB event through the claim check (the queue gets a reference, the bucket the object).
    let mut large = c.benchmark_group("receiver_large");
    large.sample_size(20);
    large.throughput(Throughput::Bytes(3_000_000));
    let checked = receiver().with_objects(Some(Arc::new(Discard)), None);
    large.bench_function("accept_3mb_claim_checked", |b| {
        b.iter_batched(
            || {
                let body = large_body(next.fetch_add(1, Ordering::Relaxed), 3_000_000);
                (headers(&body), body)
            },
            |(h, body)| {
                let answer = rt.block_on(checked.answer_parts(&Method::POST, &h, "/", None, &body));
                assert_eq!(answer.status(), 200);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    large.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
