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
    python_json(
        "import json,sys; from cfnlint.decode import cfn_yaml; print(json.dumps(cfn_yaml.load(sys.argv[1])))",
    )
}

/// What a Python `script` from the project's virtualenv prints, as JSON, for the SAM template.
fn python_json(script: &str) -> Value {
    let python = root().join(".venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(root().join("infra/template.yaml"))
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; run `make venv`", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
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

/// A function's property, or the Globals' when it sets none.
fn property<'t>(t: &'t Value, function: &'t Value, name: &str) -> &'t Value {
    match &function["Properties"][name] {
        Value::Null => &t["Globals"]["Function"][name],
        own => own,
    }
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
        let timeout = Duration::from_secs(property(&t, f, "Timeout").as_u64().expect("Timeout"));
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
    let timeout = property(&t, f, "Timeout").as_u64().unwrap();
    let (env, _) = function_env(&t, f);
    let settings = Settings::from_env(&env).unwrap();
    assert!(Duration::from_secs(timeout) < settings.processing_lease);
    let visibility = t["Resources"]["EventsQueue"]["Properties"]["VisibilityTimeout"]
        .as_u64()
        .unwrap();
    assert!(visibility >= 6 * timeout, "AWS: visibility ≥ 6 × timeout");
}

/// The template after SAM's transform, as CloudFormation will see it (cfn-lint's offline SAM
/// transform, the one `cfn-lint` and `sam validate` apply).
fn transformed() -> Value {
    python_json(
        "import json,sys\n\
         from cfnlint.decode import cfn_yaml\n\
         from cfnlint.template.transforms._sam import Transform\n\
         t = Transform(sys.argv[1], cfn_yaml.load(sys.argv[1]), 'eu-west-1')\n\
         assert not t.transform_template()\n\
         print(json.dumps(t.template(), default=str))",
    )
}

/// The provider's configuration as its function reads it, from the dev configuration: the
/// names it looked up, and those it read as credentials.
fn names_read(provider: &str) -> (Vec<String>, Vec<String>) {
    let env = Env::from_env_file(&root().join("local.env")).unwrap();
    providers::from_env(provider, &env).expect("dev configuration");
    (env.names_read(), env.secrets_read())
}

fn own_variables(f: &Value) -> Vec<String> {
    f["Properties"]["Environment"]["Variables"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// A function's IAM statements, each with the CloudFormation condition it exists under: a
/// statement written `!If [Condition, statement, !Ref AWS::NoValue]` is (Some(Condition), statement).
fn scoped_statements(f: &Value) -> Vec<(Option<&str>, &Value)> {
    f["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["Statement"].as_array().into_iter().flatten())
        .map(|s| match s["Fn::If"].as_array() {
            Some(branches) => {
                assert_eq!(branches.len(), 3, "{s}");
                assert_eq!(
                    branches[2],
                    serde_json::json!({"Ref": "AWS::NoValue"}),
                    "a conditional statement is nothing otherwise: {s}"
                );
                (branches[0].as_str(), &branches[1])
            }
            None => (None, s),
        })
        .collect()
}

/// A function's IAM statements, conditional ones included.
fn statements(f: &Value) -> Vec<&Value> {
    scoped_statements(f).into_iter().map(|(_, s)| s).collect()
}

/// Variables the template sets on every receiver (not in the Globals: the processor has no
/// use for them) that the shared runtime reads, not the provider's configuration.
const RECEIVER_RUNTIME_VARIABLES: [&str; 1] = ["ARCHIVE_BUCKET"];

#[test]
fn every_provider_is_routed_where_it_sends_with_every_method_reaching_the_function() {
    let t = template();
    for (provider, binary) in providers::ALL {
        let f = function(&t, binary);
        let events: Vec<&Value> = f["Properties"]["Events"]
            .as_object()
            .expect("Events")
            .values()
            .collect();
        assert_eq!(events.len(), 1, "{provider}: one route");
        assert_eq!(events[0]["Type"], "HttpApi", "{provider}");
        let route = events[0]["Properties"]["Path"].as_str().unwrap();
        assert_eq!(
            Some(route),
            providers::route(provider),
            "{provider}: the route the code's URLs need (providers::ROUTES)"
        );
        // The function answers 405 itself for the methods its provider never uses: every
        // method must reach it, or API Gateway answers 404 and the provider gives up.
        assert_eq!(events[0]["Properties"]["Method"], "ANY", "{provider}");
    }
}

#[test]
fn every_variable_a_provider_reads_is_deployed_credentials_only_from_secrets_manager() {
    let t = template();
    let mut missing = Vec::new();
    for (provider, binary) in providers::ALL {
        let f = function(&t, binary);
        let deployed = own_variables(f);
        let (read, secrets) = names_read(provider);
        let prefix = format!("{}_", provider.to_ascii_uppercase());
        let own_reads: Vec<&String> = read.iter().filter(|n| n.starts_with(&prefix)).collect();
        assert!(!own_reads.is_empty(), "{provider}: reads nothing?");
        for name in &own_reads {
            let arn = format!("{name}{}", config::SECRET_ARN_SUFFIX);
            if secrets.contains(name) {
                if !deployed.contains(&arn) || deployed.contains(name) {
                    missing.push(format!(
                        "{provider}: credential {name} must be deployed as {arn} only"
                    ));
                    continue;
                }
                // Its parameter, and the right to read exactly that secret.
                let param = f["Properties"]["Environment"]["Variables"][&arn]["Fn::If"][1]["Ref"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{provider}: {arn} from a parameter"));
                assert_eq!(t["Parameters"][param]["Default"], "", "{param}: optional");
                assert!(
                    statements(f).iter().any(|s| {
                        s["Action"] == serde_json::json!(["secretsmanager:GetSecretValue"])
                            && s["Resource"]["Fn::If"][1]["Ref"] == param
                    }),
                    "{provider}: may read {param}"
                );
            } else if !deployed.contains(name) {
                missing.push(format!(
                    "{provider}: reads {name}, the template does not set it"
                ));
            }
        }
        for name in &deployed {
            if RECEIVER_RUNTIME_VARIABLES.contains(&name.as_str()) {
                continue; // the runtime's (the_shared_variables_are_the_ones_the_runtime_reads)
            }
            let plain = name
                .strip_suffix(config::SECRET_ARN_SUFFIX)
                .unwrap_or(name)
                .to_owned();
            assert!(
                read.contains(&plain),
                "{provider}: the template sets {name}, the code never reads {plain}"
            );
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn the_shared_variables_are_the_ones_the_runtime_reads() {
    let t = template();
    let mut env = Env::from_env_file(&root().join("local.env")).unwrap();
    env.set("EVENTS_QUEUE_URL", "http://queue");
    Settings::from_env(&env).unwrap();
    shared::metrics::namespace(&env);
    let read = env.names_read();
    for name in t["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(
            read.contains(name),
            "the template sets {name} for every function; nothing reads it"
        );
    }
    for name in ["EVENTS_TABLE", "EVENTS_QUEUE_URL", "PAYLOAD_BUCKET"] {
        assert!(read.iter().any(|n| n == name), "{name}");
    }
    for name in RECEIVER_RUNTIME_VARIABLES {
        assert!(
            read.iter().any(|n| n == name),
            "the template sets {name} for every receiver; nothing reads it"
        );
    }
}

/// Each function may touch only its own keys, and no statement anywhere names "*". A receiver
/// may also read (GetItem, nothing else) the processor's records of its own events: a retry that
/// finds its claim RECEIVED asks whether the event reached the queue.
#[test]
fn every_function_is_scoped_to_its_own_keys_and_resources() {
    use shared::provider::EventKey;
    use shared::store::PROCESSED_PREFIX;

    const CLAIM_ACTIONS: [&str; 4] = [
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
    ];
    type Scope = (Vec<&'static str>, String, Vec<String>);
    let t = template();
    let mut scopes: Vec<(&str, Vec<Scope>)> = providers::ALL
        .iter()
        .map(|(provider, binary)| {
            let long = "x".repeat(2000);
            let keys = vec![
                shared::pipeline::dedup_key(provider, Some("t#1"), &EventKey::id("e")),
                shared::pipeline::dedup_key(provider, None, &EventKey::hash_of(b"body")),
                shared::pipeline::dedup_key(provider, None, &EventKey::id(&long)),
            ];
            let processed = keys
                .iter()
                .map(|k| shared::store::processed_key(k))
                .collect();
            (
                *binary,
                vec![
                    (CLAIM_ACTIONS.to_vec(), format!("{provider}#*"), keys),
                    (
                        vec!["dynamodb:GetItem"],
                        format!("{PROCESSED_PREFIX}{provider}#*"),
                        processed,
                    ),
                ],
            )
        })
        .collect();
    let event_key = shared::pipeline::dedup_key("tilby", None, &EventKey::id("e"));
    scopes.push((
        "event-processor",
        vec![(
            CLAIM_ACTIONS.to_vec(),
            format!("{PROCESSED_PREFIX}*"),
            vec![shared::store::processed_key(&event_key)],
        )],
    ));
    for (binary, expected) in &scopes {
        let f = function(&t, binary);
        let dynamo: Vec<&Value> = statements(f)
            .into_iter()
            .filter(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a.as_str().unwrap().starts_with("dynamodb:"))
            })
            .collect();
        assert_eq!(dynamo.len(), expected.len(), "{binary}");
        for (statement, (actions, pattern, keys)) in dynamo.iter().zip(expected) {
            assert_eq!(statement["Action"], serde_json::json!(actions), "{binary}");
            let leading =
                &statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            assert_eq!(leading, &serde_json::json!([pattern]), "{binary}");
            let prefix = pattern.trim_end_matches('*');
            for key in keys {
                assert!(key.starts_with(prefix), "{binary}: {key} outside {pattern}");
            }
        }
        for s in statements(f) {
            assert_ne!(s["Resource"], "*", "{binary}: {s}");
        }
    }
    // After SAM's transform: no managed policy but the basic execution role (logs), so no
    // SQS or DynamoDB right on "*" sneaks in through an event source.
    let cfn = transformed();
    for (name, r) in cfn["Resources"].as_object().unwrap() {
        if r["Type"] == "AWS::IAM::Role" {
            assert_eq!(
                r["Properties"]["ManagedPolicyArns"],
                serde_json::json!([
                    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
                ]),
                "{name}"
            );
        }
    }
}

#[test]
fn the_processor_reads_its_queue_bounded_and_reports_partial_failures() {
    let t = template();
    let f = function(&t, "event-processor");
    assert!(f["Properties"]["Events"].is_null(), "no SAM SQS event");
    let mappings: Vec<&Value> = t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Lambda::EventSourceMapping")
        .collect();
    assert_eq!(mappings.len(), 1);
    let m = &mappings[0]["Properties"];
    assert_eq!(m["EventSourceArn"]["Fn::GetAtt"][0], "EventsQueue");
    assert_eq!(
        m["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    let batch = m["BatchSize"].as_u64().unwrap();
    assert!(batch <= 10 || m["MaximumBatchingWindowInSeconds"].as_u64() >= Some(1));
    let concurrency = m["ScalingConfig"]["MaximumConcurrency"]["Ref"]
        .as_str()
        .expect("MaximumConcurrency from a parameter");
    assert!(t["Parameters"][concurrency]["MinValue"].as_u64() >= Some(2));
    let sqs: Vec<String> = statements(f)
        .iter()
        .filter(|s| s["Resource"]["Fn::GetAtt"][0] == "EventsQueue")
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for action in [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
    ] {
        assert!(sqs.iter().any(|a| a == action), "{action}");
    }
}

#[test]
fn every_function_logs_to_its_own_group_with_retention() {
    let t = template();
    let mut binaries: Vec<&str> = providers::ALL.iter().map(|(_, b)| *b).collect();
    binaries.push("event-processor");
    for binary in binaries {
        let f = function(&t, binary);
        let group = f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{binary}: LoggingConfig.LogGroup"));
        let g = &t["Resources"][group];
        assert_eq!(g["Type"], "AWS::Logs::LogGroup");
        assert_eq!(
            g["Properties"]["RetentionInDays"]["Ref"],
            "LogRetentionDays"
        );
        assert_eq!(
            g["Properties"]["LogGroupName"]["Fn::Sub"],
            format!("/webhooks/${{AWS::StackName}}/{binary}")
        );
        assert_eq!(
            f["Properties"]["FunctionName"]["Fn::Sub"],
            format!("${{AWS::StackName}}-{binary}")
        );
    }
}

#[test]
fn the_api_is_throttled_and_every_provider_has_an_unauthorized_alarm() {
    let t = template();
    let api = &t["Resources"]["WebhookApi"]["Properties"]["DefaultRouteSettings"];
    assert_eq!(
        api["ThrottlingBurstLimit"]["Ref"],
        "ApiThrottlingBurstLimit"
    );
    assert_eq!(api["ThrottlingRateLimit"]["Ref"], "ApiThrottlingRateLimit");
    let alarms: Vec<&Value> = t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    for (provider, _) in providers::ALL {
        assert!(
            alarms
                .iter()
                .any(|a| a["Properties"]["MetricName"] == "Unauthorized"
                    && a["Properties"]["Dimensions"][0]["Value"] == *provider),
            "{provider}: unauthorized alarm"
        );
    }
    for a in alarms {
        assert_eq!(
            a["Properties"]["AlarmActions"]["Fn::If"][0], "HasAlarmTopic",
            "{a}"
        );
    }
}

/// Every alarm on the functions' own metrics names a metric the code emits, in the namespace
/// the functions are told to use.
#[test]
fn the_alarms_watch_metrics_the_code_emits() {
    use shared::metrics as m;
    let emitted = [
        m::ACCEPTED,
        m::DUPLICATE,
        m::CONFLICT,
        m::UNAUTHORIZED,
        m::BAD_REQUEST,
        m::UNAVAILABLE,
        m::HANDSHAKE,
        m::CLAIM_LATENCY,
        m::SEND_LATENCY,
        m::PROCESSED,
        m::FAILED,
        m::REJECTED,
        m::HANDLER_LATENCY,
        m::MESSAGE_AGE,
    ];
    let t = template();
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"][m::NAMESPACE_VAR]["Ref"],
        "MetricsNamespace"
    );
    assert_eq!(
        t["Parameters"]["MetricsNamespace"]["Default"],
        m::DEFAULT_NAMESPACE
    );
    let mut watched = Vec::new();
    for (name, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let p = &r["Properties"];
        let mut metrics = vec![p.clone()];
        for q in p["Metrics"].as_array().into_iter().flatten() {
            metrics.push(q["MetricStat"]["Metric"].clone());
        }
        for metric in metrics {
            if metric["Namespace"]["Ref"] == "MetricsNamespace" {
                let metric_name = metric["MetricName"].as_str().unwrap();
                assert!(emitted.contains(&metric_name), "{name}: {metric_name}");
                assert_eq!(metric["Dimensions"][0]["Name"], m::PROVIDER, "{name}");
                watched.push(metric_name.to_owned());
            }
        }
    }
    for expected in [m::UNAUTHORIZED, m::CONFLICT, m::FAILED] {
        assert!(watched.iter().any(|w| w == expected), "{expected}");
    }
}

/// A value as a list: IAM allows one action or resource as a string or as a list of them.
fn listed(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    }
}

/// The ARN of a bucket's objects under `prefix`, as the template writes it.
fn objects_arn(bucket: &str, prefix: &str) -> Value {
    serde_json::json!({
        "Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::${{{bucket}}}/{prefix}*")
    })
}

/// S3 rights, exactly: a receiver may only put objects under its own provider's prefix, in the
/// payload bucket (bodies too large for a message) and, only when ArchiveOn, in the archive; the
/// processor may only get objects from the payload bucket. No function has another S3 action,
/// and no action anywhere is a wildcard.
#[test]
fn every_function_may_only_put_its_own_objects_and_the_processor_only_read_payloads() {
    type Grant = (Option<&'static str>, &'static str, Value);
    let t = template();
    let mut expected: Vec<(&str, Vec<Grant>)> = providers::ALL
        .iter()
        .map(|(provider, binary)| {
            let prefix = format!("{provider}/");
            (
                *binary,
                vec![
                    (None, "s3:PutObject", objects_arn("PayloadBucket", &prefix)),
                    (
                        Some("ArchiveOn"),
                        "s3:PutObject",
                        objects_arn("ArchiveBucket", &prefix),
                    ),
                ],
            )
        })
        .collect();
    expected.push((
        "event-processor",
        vec![(None, "s3:GetObject", objects_arn("PayloadBucket", ""))],
    ));
    let functions = t["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .count();
    assert_eq!(functions, expected.len(), "every function is listed here");
    for (binary, grants) in &expected {
        let f = function(&t, binary);
        for s in statements(f) {
            for action in listed(&s["Action"]) {
                let action = action.as_str().unwrap_or_else(|| panic!("{binary}: {s}"));
                assert!(!action.contains('*'), "{binary}: {action}");
            }
        }
        let s3: Vec<(Option<&str>, &Value)> = scoped_statements(f)
            .into_iter()
            .filter(|(_, s)| {
                listed(&s["Action"])
                    .iter()
                    .any(|a| a.as_str().unwrap().starts_with("s3:"))
            })
            .collect();
        let actual: Vec<(Option<&str>, Vec<Value>, Value)> = s3
            .iter()
            .map(|(condition, s)| (*condition, listed(&s["Action"]), s["Resource"].clone()))
            .collect();
        let wanted: Vec<(Option<&str>, Vec<Value>, Value)> = grants
            .iter()
            .map(|(condition, action, resource)| {
                (*condition, vec![Value::from(*action)], resource.clone())
            })
            .collect();
        assert_eq!(actual, wanted, "{binary}: S3 statements");
        for (_, s) in &s3 {
            assert_eq!(s["Effect"], "Allow", "{binary}: {s}");
        }
    }
}

/// Both buckets: SSE-S3, no public access, owner-enforced objects, kept on delete and replace,
/// and a policy refusing any request without TLS and any put without the encryption header.
#[test]
fn both_buckets_are_encrypted_private_and_refuse_plain_transport_and_unencrypted_puts() {
    let t = template();
    for (bucket, policy, condition) in [
        ("PayloadBucket", "PayloadBucketPolicy", None),
        ("ArchiveBucket", "ArchiveBucketPolicy", Some("ArchiveOn")),
    ] {
        let b = &t["Resources"][bucket];
        assert_eq!(b["Type"], "AWS::S3::Bucket", "{bucket}");
        assert_eq!(b["Condition"].as_str(), condition, "{bucket}");
        assert_eq!(b["DeletionPolicy"], "Retain", "{bucket}");
        assert_eq!(b["UpdateReplacePolicy"], "Retain", "{bucket}");
        let p = &b["Properties"];
        let encryption = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            .as_array()
            .unwrap_or_else(|| panic!("{bucket}: BucketEncryption"));
        assert!(!encryption.is_empty(), "{bucket}");
        for rule in encryption {
            assert_eq!(
                rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256",
                "{bucket}"
            );
        }
        for flag in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(
                p["PublicAccessBlockConfiguration"][flag], true,
                "{bucket}: {flag}"
            );
        }
        assert_eq!(
            p["OwnershipControls"]["Rules"],
            serde_json::json!([{"ObjectOwnership": "BucketOwnerEnforced"}]),
            "{bucket}"
        );

        let bp = &t["Resources"][policy];
        assert_eq!(bp["Type"], "AWS::S3::BucketPolicy", "{policy}");
        assert_eq!(bp["Condition"].as_str(), condition, "{policy}");
        assert_eq!(bp["Properties"]["Bucket"]["Ref"], bucket, "{policy}");
        let policy_statements = bp["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap_or_else(|| panic!("{policy}: statements"));
        let whole = serde_json::json!({"Fn::GetAtt": [bucket, "Arn"]});
        let objects = serde_json::json!({"Fn::Sub": format!("${{{bucket}.Arn}}/*")});
        // A deny for everyone, on `action`, covering `resources`, under `condition`.
        let denies = |action: &str, resources: &[&Value], condition: Value| {
            policy_statements.iter().any(|s| {
                let covered = listed(&s["Resource"]);
                s["Effect"] == "Deny"
                    && s["Principal"] == "*"
                    && listed(&s["Action"]) == vec![Value::from(action)]
                    && resources.iter().all(|r| covered.contains(*r))
                    && s["Condition"] == condition
            })
        };
        assert!(
            denies(
                "s3:*",
                &[&whole, &objects],
                serde_json::json!({"Bool": {"aws:SecureTransport": "false"}})
            ),
            "{policy}: deny without TLS"
        );
        assert!(
            denies(
                "s3:PutObject",
                &[&objects],
                serde_json::json!({
                    "StringNotEquals": {"s3:x-amz-server-side-encryption": "AES256"}
                })
            ),
            "{policy}: deny a put without x-amz-server-side-encryption: AES256"
        );
        for s in policy_statements {
            assert_eq!(s["Effect"], "Deny", "{policy}: grants nothing: {s}");
        }
    }
}

/// A message may reference a payload for as long as it can live: the dedup horizon, and the
/// queue's retention plus the dead-letter queue's (a redrive). The payloads must outlive both.
#[test]
fn payloads_outlive_every_message_that_references_them() {
    const DAY: u64 = 86_400;
    let t = template();
    let default = |name: &str| -> u64 {
        resolve(&t, &t["Parameters"][name]["Default"])
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let retention_seconds = |queue: &str| -> u64 {
        resolve(
            &t,
            &t["Resources"][queue]["Properties"]["MessageRetentionPeriod"],
        )
        .parse()
        .unwrap_or_else(|e| panic!("{queue}: {e}"))
    };
    for (bucket, parameter) in [
        ("PayloadBucket", "PayloadRetentionDays"),
        ("ArchiveBucket", "ArchiveRetentionDays"),
    ] {
        let rules = t["Resources"][bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
            .as_array()
            .unwrap_or_else(|| panic!("{bucket}: lifecycle rules"));
        let expiring: Vec<&Value> = rules
            .iter()
            .filter(|r| !r["ExpirationInDays"].is_null())
            .collect();
        assert_eq!(expiring.len(), 1, "{bucket}: one expiration");
        assert_eq!(expiring[0]["Status"], "Enabled", "{bucket}");
        assert_eq!(
            expiring[0]["ExpirationInDays"]["Ref"], parameter,
            "{bucket}"
        );
        assert!(
            t["Parameters"][parameter]["MinValue"].as_u64() >= Some(1),
            "{parameter}"
        );
        assert!(
            rules.iter().any(|r| r["Status"] == "Enabled"
                && r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
                    .as_u64()
                    .is_some()),
            "{bucket}: incomplete uploads are aborted"
        );
    }
    let payload_days = default("PayloadRetentionDays");
    let dedup_days = default("DedupTtlSeconds").div_ceil(DAY);
    assert!(
        payload_days >= dedup_days,
        "payloads kept {payload_days} days, the dedup horizon is {dedup_days}"
    );
    let message_days = (retention_seconds("EventsQueue")
        + retention_seconds("EventsDeadLetterQueue"))
    .div_ceil(DAY);
    assert!(
        payload_days >= message_days,
        "payloads kept {payload_days} days, a message (queue, then dead-letter queue) lives {message_days}"
    );
}

/// The archive is opt-in: ArchiveEnabled defaults to "false", and the bucket, its policy, its
/// output and the receivers' ARCHIVE_BUCKET exist only under ArchiveOn. Only the receivers are
/// told of it; every function is told of the payload bucket.
#[test]
fn the_archive_is_off_by_default_and_only_the_receivers_are_told_of_it() {
    let t = template();
    let enabled = &t["Parameters"]["ArchiveEnabled"];
    assert_eq!(enabled["Default"], "false");
    assert_eq!(
        enabled["AllowedValues"],
        serde_json::json!(["true", "false"])
    );
    assert_eq!(
        t["Conditions"]["ArchiveOn"],
        serde_json::json!({"Fn::Equals": [{"Ref": "ArchiveEnabled"}, "true"]})
    );
    for resource in ["ArchiveBucket", "ArchiveBucketPolicy"] {
        assert_eq!(
            t["Resources"][resource]["Condition"], "ArchiveOn",
            "{resource}"
        );
    }
    assert_eq!(t["Outputs"]["ArchiveBucketName"]["Condition"], "ArchiveOn");
    assert!(t["Outputs"]["PayloadBucketName"]["Condition"].is_null());

    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(globals["PAYLOAD_BUCKET"]["Ref"], "PayloadBucket");
    assert!(
        globals["ARCHIVE_BUCKET"].is_null(),
        "ARCHIVE_BUCKET is the receivers', not every function's"
    );
    for (provider, binary) in providers::ALL {
        let f = function(&t, binary);
        assert_eq!(
            f["Properties"]["Environment"]["Variables"]["ARCHIVE_BUCKET"],
            serde_json::json!({
                "Fn::If": ["ArchiveOn", {"Ref": "ArchiveBucket"}, {"Ref": "AWS::NoValue"}]
            }),
            "{provider}"
        );
        // With the defaults (the archive off), the function gets no ARCHIVE_BUCKET at all.
        let (_, vars) = function_env(&t, f);
        assert!(vars.contains_key("PAYLOAD_BUCKET"), "{provider}");
        assert!(!vars.contains_key("ARCHIVE_BUCKET"), "{provider}");
    }
    let processor = function(&t, "event-processor");
    assert!(
        processor["Properties"]["Environment"]["Variables"]["ARCHIVE_BUCKET"].is_null(),
        "the processor has no use for the archive"
    );
    let (_, vars) = function_env(&t, processor);
    assert!(vars.contains_key("PAYLOAD_BUCKET"));
    assert!(!vars.contains_key("ARCHIVE_BUCKET"));
}
