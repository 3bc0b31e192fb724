//! Every sample in `events/` still verifies and is accepted: as the simulator sends it (signed
//! now with local.env's dev secrets), and as its checked-in API Gateway event (at that event's
//! own time, so time-stamped signatures stay valid).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use shared::clock::FixedClock;
use shared::config::Env;
use shared::providers;

use crate::helpers::*;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn raw_samples(provider: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("events").join(provider))
        .unwrap_or_else(|e| panic!("events/{provider}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".apigw.json"))
        .collect();
    files.sort();
    files
}

fn apigw_for(sample: &Path) -> PathBuf {
    let stem = sample.file_stem().unwrap().to_string_lossy();
    sample.with_file_name(format!("{stem}.apigw.json"))
}

pub fn dev_env(stack: &Stack) -> Env {
    let mut env = Env::from_env_file(&root().join("local.env")).expect("local.env");
    env.set("EVENTS_TABLE", &stack.table);
    env.set("EVENTS_QUEUE_URL", &stack.queue_url);
    env
}

#[tokio::test]
async fn every_sample_is_accepted_as_sent_and_as_rendered() {
    let (live, rendered) = (Stack::new().await, Stack::new().await);
    let dev = Env::from_env_file(&root().join("local.env")).expect("local.env");
    let mut checked = 0;
    for (provider, _) in providers::ALL {
        let samples = raw_samples(provider);
        assert!(!samples.is_empty(), "{provider} has no samples in events/");
        let receiver = live
            .receiver(&[], |_| providers::from_env(provider, &dev_env(&live)))
            .await;
        for path in samples {
            let body = std::fs::read(&path).unwrap();
            let sent = providers::simulate(provider, &body, &dev, time::OffsetDateTime::now_utc())
                .unwrap();
            let response = send(&receiver, &sent).await;
            assert_eq!(
                response.status(),
                200,
                "{}: {:?}",
                path.display(),
                response.body()
            );

            let event_path = apigw_for(&path);
            let json = std::fs::read_to_string(&event_path)
                .unwrap_or_else(|e| panic!("{}: {e} (run `make events`)", event_path.display()));
            let request = lambda_http::request::from_str(&json)
                .unwrap_or_else(|e| panic!("{}: {e}", event_path.display()));
            assert_eq!(
                request.body().as_ref(),
                body.as_slice(),
                "{} has another body: run `make events`",
                event_path.display()
            );
            let at = serde_json::from_str::<Value>(&json).unwrap()["requestContext"]["timeEpoch"]
                .as_i64()
                .expect("timeEpoch");
            let replay = rendered
                .receiver(&[], |_| providers::from_env(provider, &dev_env(&rendered)))
                .await;
            let replay = Arc::into_inner(replay)
                .expect("sole owner")
                .with_clock(Arc::new(FixedClock::at_millis(at)));
            let answer = replay.handle(request).await;
            assert_eq!(
                answer.status(),
                200,
                "{}: {:?}",
                event_path.display(),
                answer.body()
            );
            assert_ne!(
                body_json(&answer)["status"],
                "duplicate",
                "{}",
                event_path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= providers::ALL.len());
}
