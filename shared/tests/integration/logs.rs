//! The log guarantee: at every level, TRACE included, and from every crate, no log line carries
//! a secret, a URL token, an `Authorization` or signature header, a signature we computed, or
//! personal data from a payload. Every provider's samples (accepted, duplicate, forged, during an
//! outage) and a processor batch run under the functions' own subscriber at `trace`, capturing
//! what it writes.
//!
//! The run happens in a process of its own (this test binary started again for the one inner
//! test), whose global subscriber is the capture: sharing a process with the other tests, whose
//! threads register the same call sites, lost events in both a scoped and a global capture.

use std::collections::BTreeSet;

use serde_json::Value;
use shared::config::Env;
use shared::providers;

use crate::helpers::*;
use crate::samples::{dev_env, raw_samples, root};

/// Keys whose values are personal data in the samples.
const PERSONAL_KEYS: &[&str] = &[
    "first_name",
    "last_name",
    "full_name",
    "email",
    "email_address",
    "from_user",
    "phone",
    "mobile",
    "number",
    "phone_number",
    "full_address",
    "address",
    "pincode",
];

/// Personal values in a sample: JSON fields above (and a customer's `name`), and anything that
/// looks like an email address in any body (XML, text, forms).
fn personal_data(body: &[u8], out: &mut BTreeSet<String>) {
    fn walk(value: &Value, parent: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let personal = PERSONAL_KEYS.contains(&k.as_str())
                        || (k == "name" && parent == "customer");
                    match v {
                        Value::String(s) if personal => {
                            out.insert(s.clone());
                        }
                        Value::Number(n) if personal => {
                            out.insert(n.to_string());
                        }
                        _ => walk(v, k, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, parent, out)),
            _ => {}
        }
    }
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        walk(&json, "", out);
    }
    let text = String::from_utf8_lossy(body).replace("%40", "@");
    for word in text.split(|c: char| !(c.is_alphanumeric() || "@.-_+".contains(c))) {
        if word.contains('@') && word.len() > 3 {
            out.insert(word.trim_matches('.').to_owned());
        }
    }
}

/// Every credential in the environment: secrets, tokens, header values, passwords.
fn credentials(env_file: &str, out: &mut BTreeSet<String>) {
    for line in env_file.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let secret = ["SECRET", "TOKEN", "AUTH_VALUE", "PASSWORD"]
            .iter()
            .any(|s| name.contains(s))
            && !name.starts_with("AWS_");
        if secret {
            out.extend(value.split(',').map(|v| v.trim().to_owned()));
        }
    }
}

/// The header values a request authenticates with (signatures, tokens, Authorization).
fn auth_headers(sent: &shared::apigw::Sent, out: &mut BTreeSet<String>) {
    for (name, value) in &sent.headers {
        let name = name.to_ascii_lowercase();
        // Every header but the content's type, the agent, timestamps and Standard Webhooks' event
        // id (`webhook-id`: an id, logged as `event_id` as every provider's is) is a credential.
        let not_secret = ["content-type", "user-agent", "webhook-id", "svix-id"];
        if !not_secret.contains(&name.as_str()) && !name.contains("timestamp") {
            out.insert(value.clone());
        }
    }
}

const INNER: &str = "logs::capture_run_in_its_own_process";

#[test]
fn no_secret_token_signature_or_personal_data_reaches_the_logs_even_at_trace() {
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([INNER, "--exact", "--ignored", "--test-threads=1"])
        .env("LOG_CAPTURE_RUN", "1")
        .status()
        .expect("run the capture in its own process");
    assert!(
        status.success(),
        "the capture run failed: see its output above"
    );
}

#[tokio::test]
#[ignore = "run in its own process by no_secret_token_signature_or_personal_data_reaches_the_logs_even_at_trace"]
async fn capture_run_in_its_own_process() {
    assert_eq!(
        std::env::var("LOG_CAPTURE_RUN").as_deref(),
        Ok("1"),
        "run by the outer test"
    );
    let capture = shared::telemetry::Capture::default();
    tracing::subscriber::set_global_default(shared::telemetry::subscriber(
        "trace",
        capture.clone(),
    ))
    .expect("the only subscriber of this process");
    let env_file = std::fs::read_to_string(root().join("local.env")).unwrap();
    let dev = Env::from_env_file(&root().join("local.env")).unwrap();
    let mut forbidden = BTreeSet::new();
    credentials(&env_file, &mut forbidden);

    let stack = Stack::new().await;
    let outage_sdk = sdk_at(DEAD_ENDPOINT).await;
    let now = time::OffsetDateTime::now_utc();
    let processor = stack.processor(event_processor::router());
    let (mut answered, mut processed) = (0, 0);
    for (provider, _) in providers::ALL {
        let receiver = stack
            .receiver(&[], |_| providers::from_env(provider, &dev_env(&stack)))
            .await;
        let outage = shared::runtime::receiver_from_env(dev_env(&stack), &outage_sdk, |env| {
            providers::from_env(provider, env)
        })
        .await;
        for (i, path) in raw_samples(provider).into_iter().enumerate() {
            let body = std::fs::read(&path).unwrap();
            personal_data(&body, &mut forbidden);
            let sent = providers::simulate(provider, &body, &dev, now).unwrap();
            auth_headers(&sent, &mut forbidden);
            assert_eq!(send(&receiver, &sent).await.status(), 200, "{path:?}");
            // The processor takes it (its handler logs too); the retry is then a duplicate.
            loop {
                match stack.feed(&processor).await {
                    0 => break,
                    n => processed += n,
                }
            }
            assert_eq!(send(&receiver, &sent).await.status(), 200, "{path:?} again");
            // Forged: another body under the same credentials. What we would have computed
            // for it (the signature of the forged body) must not be logged either.
            let mut forged_body = body.clone();
            forged_body.extend_from_slice(b"\n ");
            let forged = shared::apigw::Sent {
                body: forged_body.clone(),
                ..sent.clone()
            };
            let computed = providers::simulate(provider, &forged_body, &dev, now).unwrap();
            auth_headers(&computed, &mut forbidden);
            let status = send(&receiver, &forged).await.status();
            // URL-token providers sign nothing: the forged body passes and is a new event.
            assert!(status == 401 || status == 200, "{path:?}: {status}");
            answered += 3;
            if i == 0 {
                // The failure path (the SDK's retries and its errors), once per provider.
                let unavailable = send(&outage, &sent).await.status();
                assert!(
                    unavailable == 503 || unavailable == 200,
                    "{path:?}: {unavailable}"
                );
                answered += 1;
            }
        }
    }
    let records = stack.drain().await;
    assert!(
        processed + records.len() > 20,
        "{processed} + {} messages",
        records.len()
    );
    let response = processor.process(sqs_event(records)).await;
    assert!(response.batch_item_failures.is_empty());

    let logs = capture.text();
    // The capture saw the run: one line per request, the processor, and third-party INFO.
    assert!(
        logs.matches("webhook answered").count() >= answered,
        "{answered} requests"
    );
    assert!(logs.contains("trybe event processed"));
    let forbidden: Vec<&String> = forbidden.iter().filter(|v| v.len() >= 4).collect();
    assert!(forbidden.len() > 150, "{} values checked", forbidden.len());
    let leaked: Vec<&&String> = forbidden
        .iter()
        .filter(|v| logs.contains(v.as_str()))
        .collect();
    assert!(leaked.is_empty(), "in the logs: {leaked:?}");
}
