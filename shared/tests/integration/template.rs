//! The SAM template agrees with the code: every receiver's timeout lies between its request
//! deadline and its claim lease (as `Settings` derives them from the template's environment),
//! and the queue's message size limit is the one the receivers check against.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shared::config::{self, Env, Settings};
use shared::providers;

use crate::samples::root;

/// The template as JSON, read by cfn-lint's own YAML loader (it understands `!Ref` and friends).
fn template() -> Value {
    let python = root().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import json,sys; from cfnlint.decode import cfn_yaml; print(json.dumps(cfn_yaml.load(sys.argv[1])))",
        ])
        .arg(root().join("infra/template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run `make venv`", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("template JSON")
}

/// A value with `Ref`s to parameters replaced by their defaults (other refs by a placeholder).
fn resolve(t: &Value, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(m) if m.contains_key("Ref") => {
            let name = m["Ref"].as_str().unwrap();
            match t["Parameters"].get(name) {
                Some(p) => resolve(t, &p["Default"]),
                None => format!("<{name}>"),
            }
        }
        other => panic!("cannot resolve {other}"),
    }
}

/// The environment a function gets: the globals, then its own variables.
fn function_env(t: &Value, function: &Value) -> (Env, HashMap<String, String>) {
    let mut vars = HashMap::new();
    for source in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        if let Some(map) = source.as_object() {
            for (k, v) in map {
                if v.get("Fn::If").is_none() {
                    vars.insert(k.clone(), resolve(t, v));
                }
            }
        }
    }
    let env = Env::from_pairs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    (env, vars)
}

fn function<'t>(t: &'t Value, binary: &str) -> &'t Value {
    t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["Metadata"]["BuildProperties"]["Binary"] == binary)
        .unwrap_or_else(|| panic!("no function builds {binary}"))
}

#[test]
fn every_receiver_times_out_after_its_deadline_and_before_its_lease_ends() {
    let t = template();
    for (provider, binary) in providers::ALL {
        let f = function(&t, binary);
        let timeout = Duration::from_secs(f["Properties"]["Timeout"].as_u64().expect("Timeout"));
        let (env, _) = function_env(&t, f);
        let settings = Settings::from_env(&env).expect("settings from the template");
        assert!(
            settings.deadline < timeout,
            "{provider}: deadline {:?} must be below the timeout {timeout:?}",
            settings.deadline
        );
        assert!(
            timeout <= settings.lease,
            "{provider}: timeout {timeout:?} must not exceed the lease {:?}",
            settings.lease
        );
    }
}

#[test]
fn the_queue_refuses_nothing_the_receivers_accept() {
    let t = template();
    let queue = &t["Resources"]["EventsQueue"]["Properties"];
    let queue_max: usize = resolve(&t, &queue["MaximumMessageSize"]).parse().unwrap();
    assert_eq!(queue_max, config::DEFAULT_MAX_MESSAGE_BYTES);
    for (provider, binary) in providers::ALL {
        let (env, vars) = function_env(&t, function(&t, binary));
        assert!(vars.contains_key("MAX_MESSAGE_BYTES"), "{provider}");
        let settings = Settings::from_env(&env).unwrap();
        assert_eq!(settings.max_message_bytes, queue_max, "{provider}");
        assert_eq!(
            settings.max_events,
            shared::provider::DEFAULT_MAX_EVENTS,
            "{provider}"
        );
    }
    // The same parameter drives both, so they cannot drift apart.
    assert_eq!(queue["MaximumMessageSize"]["Ref"], "MaxMessageBytes");
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["MAX_MESSAGE_BYTES"]["Ref"],
        "MaxMessageBytes"
    );
}

#[test]
fn the_processor_finishes_within_its_lease_and_its_queue_visibility() {
    let t = template();
    let f = function(&t, "event-processor");
    let timeout = f["Properties"]["Timeout"].as_u64().unwrap();
    let (env, _) = function_env(&t, f);
    let settings = Settings::from_env(&env).unwrap();
    assert!(Duration::from_secs(timeout) < settings.processing_lease);
    let visibility = t["Resources"]["EventsQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .unwrap();
    assert!(visibility >= 6 * timeout, "AWS: visibility ≥ 6 × timeout");
}
