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

/// The environment a function gets with the parameters' defaults: the globals, then its own
/// variables (a variable `!If [C, value, !Ref AWS::NoValue]` only when C holds).
fn function_env(t: &Value, function: &Value) -> (Env, HashMap<String, String>) {
    let deployed = Deployed::new(t, &[]);
    let mut vars = HashMap::new();
    for source in [
        &t["Globals"]["Function"]["Environment"]["Variables"],
        &function["Properties"]["Environment"]["Variables"],
    ] {
        if let Some(map) = source.as_object() {
            for (k, v) in map {
                match deployed.eval(v) {
                    Value::Null => {}
                    Value::String(value) => {
                        vars.insert(k.clone(), value);
                    }
                    other => panic!("{k}: {other}"),
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

#[test]
fn every_retry_horizon_is_spanned_by_its_receives_and_alarmed_before_it_ends() {
    use shared::queue::Backoff;
    let t = template();
    let backoff = Backoff::default();
    let parameter = &t["Parameters"]["RetryHorizonHours"];
    let allowed: Vec<String> = parameter["AllowedValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| resolve(&t, v))
        .collect();
    let mapping = t["Mappings"]["RetryHorizon"].as_object().unwrap();
    let mut mapped: Vec<String> = mapping.keys().cloned().collect();
    mapped.sort();
    let mut sorted = allowed.clone();
    sorted.sort();
    assert_eq!(sorted, mapped, "one mapping entry per allowed horizon");
    assert!(allowed.contains(&resolve(&t, &parameter["Default"])));
    for hours in &allowed {
        let horizon = Duration::from_secs(hours.parse::<u64>().unwrap() * 3600);
        let entry = &mapping[hours.as_str()];
        let receives = entry["MaxReceiveCount"].as_u64().unwrap() as u32;
        // The last receive comes after the horizon even at the floor of every wait (jitter only
        // adds), and one receive fewer would not: the fewest, so that a poison record that
        // slipped through does not linger.
        assert!(
            backoff.span(receives) >= horizon,
            "{hours} h: {receives} receives span {:?}",
            backoff.span(receives)
        );
        assert!(
            backoff.span(receives - 1) < horizon,
            "{hours} h: {receives} is not the fewest"
        );
        assert_eq!(receives, backoff.receives_for(horizon));
        // Every receive fits in the message's life: waits with all their jitter, plus the
        // processor's timeout each, within the queue's retention.
        let retention = t["Resources"]["EventsQueue"]["Properties"]["MessageRetentionPeriod"]
            .as_u64()
            .unwrap();
        let longest: Duration = (1..receives)
            .map(|n| backoff.delay(n, 1.0) + Duration::from_secs(60))
            .sum();
        assert!(
            longest < Duration::from_secs(retention),
            "{hours} h outlives the queue's retention"
        );
        assert_eq!(
            entry["AlarmAgeMilliseconds"].as_u64().unwrap(),
            horizon.as_millis() as u64 * 3 / 4,
            "{hours} h: the alarm fires at three quarters of the horizon"
        );
    }
    let queue = &t["Resources"]["EventsQueue"]["Properties"];
    assert_eq!(
        queue["RedrivePolicy"]["maxReceiveCount"],
        serde_json::json!({"Fn::FindInMap": ["RetryHorizon", {"Ref": "RetryHorizonHours"}, "MaxReceiveCount"]})
    );
    let alarm = &t["Resources"]["RetryHorizonAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], shared::metrics::FAILING_MESSAGE_AGE);
    assert_eq!(
        alarm["Namespace"],
        serde_json::json!({"Ref": "MetricsNamespace"})
    );
    assert_eq!(
        alarm["Threshold"],
        serde_json::json!({"Fn::FindInMap": ["RetryHorizon", {"Ref": "RetryHorizonHours"}, "AlarmAgeMilliseconds"]})
    );
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    // A failing message reports its age once per wait: the alarm's window must span the longest
    // wait, and one datapoint in it must do, or it would fall back to OK between receives.
    let window = alarm["Period"].as_u64().unwrap() * alarm["EvaluationPeriods"].as_u64().unwrap();
    assert!(
        Duration::from_secs(window) > backoff.delay(u32::MAX, 1.0),
        "a window of {window} s is shorter than the longest wait"
    );
    assert_eq!(alarm["DatapointsToAlarm"], 1);
    assert_eq!(alarm["TreatMissingData"], "notBreaching");
    // The wait after any receive fits SQS's limit on a visibility timeout.
    assert!(backoff.delay(u32::MAX, 1.0) <= shared::queue::SQS_MAX_VISIBILITY);
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
const RECEIVER_RUNTIME_VARIABLES: [&str; 2] = ["ARCHIVE_BUCKET", "OBJECTS_KMS_KEY_ARN"];

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

/// The boundaries on the queue (shared::trust): the processor knows each receiver's role (its unique id,
/// what SQS reports as a message's SenderId before ':') for exactly the provider it receives,
/// every provider of `providers::ALL` in that order; who the operators are (a parameter, nobody
/// by default); and the dead-letter queue, where it moves a refused message itself: its one new
/// right on SQS is SendMessage there. The receivers may send to the events queue only.
#[test]
fn the_processor_knows_each_receivers_role_the_operators_and_the_dead_letter_queue() {
    let t = template();
    let cfn = transformed();
    let f = function(&t, "event-processor");
    let vars = &f["Properties"]["Environment"]["Variables"];
    let deployed = Deployed::new(&t, &[]);

    let trusted = deployed.eval(&vars["TRUSTED_SENDERS"]);
    let trusted = trusted.as_str().expect("TRUSTED_SENDERS");
    let expected: Vec<String> = providers::ALL
        .iter()
        .map(|(provider, binary)| {
            let role = role_of(&cfn, &function_id(&t, binary));
            format!("{provider}=<{role}.RoleId>")
        })
        .collect();
    assert_eq!(
        trusted.split(',').collect::<Vec<_>>(),
        expected,
        "one provider=<its receiver's role id> per provider, in providers::ALL order"
    );

    assert_eq!(
        vars["OPERATOR_SENDERS"],
        serde_json::json!({"Fn::Join": [",", {"Ref": "OperatorPrincipalIds"}]})
    );
    assert_eq!(
        deployed.eval(&vars["OPERATOR_SENDERS"]),
        "",
        "nobody by default"
    );
    let two = Deployed::new(
        &t,
        &[(
            "OperatorPrincipalIds",
            serde_json::json!([OPERATOR_ROLE, OPERATOR_USER]),
        )],
    );
    assert_eq!(
        two.eval(&vars["OPERATOR_SENDERS"]),
        format!("{OPERATOR_ROLE},{OPERATOR_USER}")
    );
    assert_eq!(
        vars["DEAD_LETTER_QUEUE_URL"],
        serde_json::json!({"Ref": "EventsDeadLetterQueue"})
    );

    // SQS rights, exactly: (queue, actions) per function.
    let sqs_rights = |f: &Value| -> Vec<(Value, Vec<Value>)> {
        scoped_statements(f)
            .into_iter()
            .filter(|(_, s)| {
                listed(&s["Action"])
                    .iter()
                    .any(|a| a.as_str().unwrap().starts_with("sqs:"))
            })
            .map(|(condition, s)| {
                assert_eq!(condition, None, "{s}");
                assert_eq!(s["Effect"], "Allow", "{s}");
                (s["Resource"].clone(), listed(&s["Action"]))
            })
            .collect()
    };
    let queue = serde_json::json!({"Fn::GetAtt": ["EventsQueue", "Arn"]});
    let dlq = serde_json::json!({"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]});
    let actions = |a: &[&str]| a.iter().map(|a| Value::from(*a)).collect::<Vec<_>>();
    assert_eq!(
        sqs_rights(f),
        vec![
            (
                queue.clone(),
                actions(&[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:ChangeMessageVisibility"
                ])
            ),
            (dlq, actions(&["sqs:SendMessage"])),
        ],
        "the processor: its queue, and SendMessage on the dead-letter queue only"
    );
    for (provider, binary) in providers::ALL {
        assert_eq!(
            sqs_rights(function(&t, binary)),
            vec![(
                queue.clone(),
                actions(&["sqs:SendMessage", "sqs:GetQueueAttributes"])
            )],
            "{provider}"
        );
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
        m::FAILING_MESSAGE_AGE,
        m::REFUSED,
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
                if metric_name == m::REFUSED || metric_name == m::FAILING_MESSAGE_AGE {
                    // The provider a refused message claims is what is in doubt; a failing
                    // record's age is alarmed on whatever its provider.
                    assert!(
                        metric["Dimensions"].is_null(),
                        "{name}: {metric_name} has none"
                    );
                } else {
                    assert_eq!(metric["Dimensions"][0]["Name"], m::PROVIDER, "{name}");
                }
                watched.push(metric_name.to_owned());
            }
        }
    }
    for expected in [
        m::UNAUTHORIZED,
        m::CONFLICT,
        m::FAILED,
        m::REFUSED,
        m::FAILING_MESSAGE_AGE,
    ] {
        assert!(watched.iter().any(|w| w == expected), "{expected}");
    }
}

/// Any refused message alarms (more than 0 in 5 minutes), through the same topic as the others;
/// it has its runbook section and a line on the dashboard.
#[test]
fn a_refused_message_alarms_and_has_a_runbook() {
    let t = template();
    let alarm = &t["Resources"]["RefusedMessageAlarm"];
    assert_eq!(alarm["Type"], "AWS::CloudWatch::Alarm");
    let p = &alarm["Properties"];
    assert_eq!(p["Namespace"]["Ref"], "MetricsNamespace");
    assert_eq!(p["MetricName"], shared::metrics::REFUSED);
    assert!(p["Dimensions"].is_null(), "every provider: no dimensions");
    assert_eq!(p["Statistic"], "Sum");
    assert_eq!(p["Period"], 300);
    assert_eq!(p["EvaluationPeriods"], 1);
    assert_eq!(p["Threshold"], 0);
    assert_eq!(p["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(p["TreatMissingData"], "notBreaching");
    let actions = serde_json::json!({
        "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
    });
    assert_eq!(p["AlarmActions"], actions);
    assert_eq!(p["OKActions"], actions);
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    assert!(
        runbook.contains("\n## RefusedMessageAlarm"),
        "docs/runbook.md has no section for RefusedMessageAlarm"
    );
    let body =
        Deployed::new(&t, &[]).eval(&t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]);
    let body: Value = serde_json::from_str(body.as_str().unwrap()).expect("dashboard JSON");
    let namespace = &t["Parameters"]["MetricsNamespace"]["Default"];
    let shown = body["widgets"].as_array().unwrap().iter().any(|w| {
        w["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| {
                m[0] == *namespace
                    && m[1] == shared::metrics::REFUSED
                    && m[2]["stat"] == "Sum"
                    && m.get(3).is_none()
            })
    });
    assert!(
        shown,
        "the dashboard shows Refused (its sum, no dimensions)"
    );
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

/// The template as CloudFormation would resolve it for one set of parameter values: every
/// parameter's default, then `overrides`. Enough of CloudFormation's intrinsics for the policies
/// and variables tested here (Ref, GetAtt, Sub, Join, Split, If, Equals, Not); what CloudFormation
/// only knows at deploy time (a resource's name or attribute, a pseudo parameter) becomes a
/// placeholder, `<Resource>` or `<Resource.Attribute>`.
struct Deployed<'t> {
    t: &'t Value,
    parameters: HashMap<String, Value>,
}

impl<'t> Deployed<'t> {
    fn new(t: &'t Value, overrides: &[(&str, Value)]) -> Self {
        let mut parameters = HashMap::new();
        for (name, p) in t["Parameters"].as_object().unwrap() {
            let default = match &p["Default"] {
                Value::Number(n) => Value::from(n.to_string()),
                Value::String(s) if p["Type"] == "CommaDelimitedList" => {
                    Value::from(s.split(',').collect::<Vec<&str>>())
                }
                other => other.clone(),
            };
            parameters.insert(name.clone(), default);
        }
        for (name, value) in overrides {
            assert!(parameters.contains_key(*name), "no parameter {name}");
            parameters.insert((*name).to_owned(), value.clone());
        }
        Deployed { t, parameters }
    }

    fn condition(&self, name: &str) -> bool {
        let c = &self.t["Conditions"][name];
        assert!(!c.is_null(), "no condition {name}");
        self.eval(c)
            .as_bool()
            .unwrap_or_else(|| panic!("{name}: {c}"))
    }

    /// `v` resolved; `Ref AWS::NoValue` (Null) disappears from the list or map holding it.
    fn eval(&self, v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i))
                    .filter(|i| !i.is_null())
                    .collect(),
            ),
            Value::Object(m) if m.len() == 1 => {
                let (key, arg) = m.iter().next().unwrap();
                match key.as_str() {
                    "Ref" => {
                        let name = arg.as_str().unwrap();
                        match self.parameters.get(name) {
                            Some(value) => value.clone(),
                            None if name == "AWS::NoValue" => Value::Null,
                            None => Value::from(format!("<{name}>")),
                        }
                    }
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| a.as_str().unwrap())
                            .collect();
                        Value::from(format!("<{}>", parts.join(".")))
                    }
                    "Fn::Sub" => {
                        let text = arg.as_str().unwrap_or_else(|| panic!("Fn::Sub {arg}"));
                        let mut out = String::new();
                        let mut rest = text;
                        while let Some(at) = rest.find("${") {
                            out.push_str(&rest[..at]);
                            let close = rest[at..].find('}').unwrap() + at;
                            let name = &rest[at + 2..close];
                            match self.parameters.get(name) {
                                Some(Value::String(value)) => out.push_str(value),
                                Some(other) => panic!("${{{name}}}: {other}"),
                                None => out.push_str(&format!("<{name}>")),
                            }
                            rest = &rest[close + 1..];
                        }
                        out.push_str(rest);
                        Value::from(out)
                    }
                    "Fn::Join" => {
                        let separator = arg[0].as_str().unwrap();
                        let parts = self.eval(&arg[1]);
                        let parts: Vec<&str> = parts
                            .as_array()
                            .unwrap_or_else(|| panic!("Fn::Join of {parts}"))
                            .iter()
                            .map(|p| p.as_str().unwrap())
                            .collect();
                        Value::from(parts.join(separator))
                    }
                    "Fn::Split" => {
                        let separator = arg[0].as_str().unwrap();
                        let text = self.eval(&arg[1]);
                        Value::from(text.as_str().unwrap().split(separator).collect::<Vec<_>>())
                    }
                    "Fn::If" => {
                        let branch = if self.condition(arg[0].as_str().unwrap()) {
                            1
                        } else {
                            2
                        };
                        self.eval(&arg[branch])
                    }
                    "Fn::Equals" => Value::from(self.eval(&arg[0]) == self.eval(&arg[1])),
                    "Fn::Not" => Value::from(!self.eval(&arg[0]).as_bool().unwrap()),
                    k if k.starts_with("Fn::") => panic!("{k} is not modelled here"),
                    _ => Value::Object(
                        [(key.clone(), self.eval(arg))]
                            .into_iter()
                            .filter(|(_, v)| !v.is_null())
                            .collect(),
                    ),
                }
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.eval(v)))
                    .filter(|(_, v)| !v.is_null())
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A resource's policy statements (`document` under its properties), resolved.
    fn statements(&self, resource: &str, document: &str) -> Vec<Value> {
        let d = &self.t["Resources"][resource]["Properties"][document];
        assert!(!d.is_null(), "{resource}: {document}");
        self.eval(&d["Statement"]).as_array().unwrap().clone()
    }
}

/// IAM's `*` and `?` wildcards (StringLike), over the whole of `value`.
fn like(pattern: &str, value: &str) -> bool {
    match (pattern.chars().next(), value.chars().next()) {
        (None, None) => true,
        (Some('*'), _) => {
            like(&pattern[1..], value)
                || value
                    .chars()
                    .next()
                    .is_some_and(|c| like(pattern, &value[c.len_utf8()..]))
        }
        (Some(p), Some(v)) if p == '?' || p == v => {
            like(&pattern[p.len_utf8()..], &value[v.len_utf8()..])
        }
        _ => false,
    }
}

/// Whether a bucket policy's Deny statements refuse `action` on an object to a request with
/// these context keys (aws:userid, s3:x-amz-server-side-encryption, …; TLS on). A condition
/// operator not modelled here fails the test rather than being guessed.
fn bucket_denies(statements: &[Value], action: &str, context: &[(&str, &str)]) -> bool {
    let context: HashMap<&str, &str> = context
        .iter()
        .copied()
        .chain([("aws:SecureTransport", "true")])
        .collect();
    statements.iter().any(|s| {
        let names_action = listed(&s["Action"])
            .iter()
            .any(|a| like(a.as_str().unwrap(), action));
        if s["Effect"] != "Deny" || s["Principal"] != "*" || !names_action {
            return false;
        }
        let Some(conditions) = s["Condition"].as_object() else {
            return true; // no condition: everyone
        };
        conditions.iter().all(|(operator, keys)| {
            keys.as_object().unwrap().iter().all(|(key, wanted)| {
                let wanted: Vec<String> = listed(wanted)
                    .iter()
                    .map(|w| w.as_str().unwrap().to_owned())
                    .collect();
                let actual = context.get(key.as_str());
                match operator.as_str() {
                    "Bool" | "StringEquals" => {
                        actual.is_some_and(|a| wanted.iter().any(|w| w == a))
                    }
                    // A key the request lacks never equals or matches: the negation applies.
                    "StringNotEquals" => !actual.is_some_and(|a| wanted.iter().any(|w| w == a)),
                    "StringNotLike" => !actual.is_some_and(|a| wanted.iter().any(|w| like(w, a))),
                    other => panic!("condition operator {other} is not modelled here: {s}"),
                }
            })
        })
    })
}

/// The logical ID of the function that builds `binary`.
fn function_id(t: &Value, binary: &str) -> String {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"] == binary)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no function builds {binary}"))
}

/// The role SAM gives a function (the transformed template's `Role`): `<function>Role`, which
/// the template may reference by that name.
fn role_of(cfn: &Value, function: &str) -> String {
    let role = &cfn["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"];
    assert_eq!(role[1], "Arn", "{function}: {role}");
    let role = role[0].as_str().unwrap().to_owned();
    assert_eq!(cfn["Resources"][&role]["Type"], "AWS::IAM::Role", "{role}");
    role
}

/// An id of each kind for the operator parameter: a role's (sessions: `<id>:<session>`) and a user's.
const OPERATOR_ROLE: &str = "AROAOPERATOREXAMPLE01";
const OPERATOR_USER: &str = "AIDAOPERATOREXAMPLE02";

/// Both buckets: SSE-S3 (or SSE-KMS with the stack's key: `the_objects_key_...`), no public
/// access, owner-enforced objects, kept on delete and replace, and a policy refusing any request
/// without TLS and any put without the encryption header; a policy that grants nothing.
#[test]
fn both_buckets_are_encrypted_private_and_refuse_plain_transport_and_unencrypted_puts() {
    let t = template();
    let defaults = Deployed::new(&t, &[]);
    for (bucket, policy, condition) in [
        ("PayloadBucket", "PayloadBucketPolicy", None),
        ("ArchiveBucket", "ArchiveBucketPolicy", Some("ArchiveOn")),
    ] {
        let b = &t["Resources"][bucket];
        assert_eq!(b["Type"], "AWS::S3::Bucket", "{bucket}");
        assert_eq!(b["Condition"].as_str(), condition, "{bucket}");
        assert_eq!(b["DeletionPolicy"], "Retain", "{bucket}");
        assert_eq!(b["UpdateReplacePolicy"], "Retain", "{bucket}");
        let p = defaults.eval(&b["Properties"]);
        assert_eq!(
            p["BucketEncryption"]["ServerSideEncryptionConfiguration"],
            serde_json::json!([{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]),
            "{bucket}: SSE-S3 by default"
        );
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
        for key in ["none", "create"] {
            for operators in [vec![""], vec![OPERATOR_ROLE, OPERATOR_USER]] {
                let deployed = Deployed::new(
                    &t,
                    &[
                        ("BucketEncryptionKey", Value::from(key)),
                        ("OperatorPrincipalIds", Value::from(operators.clone())),
                    ],
                );
                let statements = deployed.statements(policy, "PolicyDocument");
                let whole = Value::from(format!("<{bucket}.Arn>"));
                let objects = Value::from(format!("<{bucket}.Arn>/*"));
                assert!(
                    statements.iter().any(|s| s["Effect"] == "Deny"
                        && s["Principal"] == "*"
                        && listed(&s["Action"]) == vec![Value::from("s3:*")]
                        && listed(&s["Resource"]).contains(&whole)
                        && listed(&s["Resource"]).contains(&objects)
                        && s["Condition"]
                            == serde_json::json!({"Bool": {"aws:SecureTransport": "false"}})),
                    "{policy} ({key}): deny without TLS"
                );
                for s in &statements {
                    assert_eq!(s["Effect"], "Deny", "{policy}: grants nothing: {s}");
                    for resource in listed(&s["Resource"]) {
                        assert!(resource == whole || resource == objects, "{policy}: {s}");
                    }
                }
                let put = |encryption: &[(&str, &str)]| {
                    bucket_denies(&statements, "s3:PutObject", encryption)
                };
                let sse = "s3:x-amz-server-side-encryption";
                assert!(put(&[]), "{policy} ({key}): a put without the header");
                assert!(put(&[(sse, "aws:kms:dsse")]), "{policy} ({key})");
                if key == "none" {
                    assert!(!put(&[(sse, "AES256")]), "{policy}: a put with AES256");
                    assert!(put(&[(sse, "aws:kms")]), "{policy}: SSE-S3 only");
                }
            }
        }
    }
}

/// BucketEncryptionKey=create: a customer-managed key, rotated, retained like the buckets it
/// encrypts, whose policy delegates to IAM and names no role (the roles' policies name the key:
/// naming them back would be a cycle); both buckets SSE-KMS with it and a bucket key; the
/// receivers told of it (OBJECTS_KMS_KEY_ARN, "" without it), each may only ask for data keys and
/// the processor only decrypt, both only under ObjectsKeyOn; and the bucket policies refuse a put
/// that does not name it. Off by default.
#[test]
fn the_objects_key_is_optional_and_wired_to_buckets_functions_and_policies() {
    let t = template();
    let param = &t["Parameters"]["BucketEncryptionKey"];
    assert_eq!(param["Default"], "none");
    assert_eq!(
        param["AllowedValues"],
        serde_json::json!(["none", "create"])
    );
    assert_eq!(
        t["Conditions"]["ObjectsKeyOn"],
        serde_json::json!({"Fn::Equals": [{"Ref": "BucketEncryptionKey"}, "create"]})
    );
    let key = &t["Resources"]["ObjectsKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Condition"], "ObjectsKeyOn");
    assert_eq!(key["DeletionPolicy"], "Retain");
    assert_eq!(key["UpdateReplacePolicy"], "Retain");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let on = Deployed::new(&t, &[("BucketEncryptionKey", Value::from("create"))]);
    let off = Deployed::new(&t, &[]);
    assert!(on.condition("ObjectsKeyOn") && !off.condition("ObjectsKeyOn"));

    let key_policy = on.statements("ObjectsKey", "KeyPolicy");
    assert!(
        key_policy.iter().any(|s| s["Effect"] == "Allow"
            && s["Principal"]["AWS"] == "arn:<AWS::Partition>:iam::<AWS::AccountId>:root"
            && listed(&s["Action"]) == vec![Value::from("kms:*")]),
        "the key policy delegates to IAM (the account): {key_policy:?}"
    );
    for s in &key_policy {
        if s["Effect"] == "Allow" {
            assert_eq!(
                s["Principal"]["AWS"], "arn:<AWS::Partition>:iam::<AWS::AccountId>:root",
                "only the account is trusted: {s}"
            );
        }
        assert!(
            !s.to_string().contains("Role"),
            "the key policy names no role (a cycle with the roles' policies): {s}"
        );
    }
    let arn = Value::from("<ObjectsKey.Arn>");

    for bucket in ["PayloadBucket", "ArchiveBucket"] {
        assert_eq!(
            on.eval(&t["Resources"][bucket]["Properties"]["BucketEncryption"]),
            serde_json::json!({"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": arn},
                "BucketKeyEnabled": true
            }]}),
            "{bucket}"
        );
        let statements = on.statements(&format!("{bucket}Policy"), "PolicyDocument");
        let sse = "s3:x-amz-server-side-encryption";
        let key_id = "s3:x-amz-server-side-encryption-aws-kms-key-id";
        let put = |context: &[(&str, &str)]| bucket_denies(&statements, "s3:PutObject", context);
        assert!(
            !put(&[(sse, "aws:kms"), (key_id, "<ObjectsKey.Arn>")]),
            "{bucket}: the key"
        );
        assert!(
            put(&[
                (sse, "aws:kms"),
                (key_id, "arn:aws:kms:eu-west-1:1:key/other")
            ]),
            "{bucket}: another key"
        );
        assert!(put(&[(sse, "aws:kms")]), "{bucket}: no key named");
        assert!(
            put(&[(sse, "AES256")]),
            "{bucket}: SSE-S3 when the key is on"
        );
    }

    let receivers: Vec<&str> = providers::ALL.iter().map(|(_, b)| *b).collect();
    for binary in receivers.iter().copied().chain(["event-processor"]) {
        let f = function(&t, binary);
        let variable = &f["Properties"]["Environment"]["Variables"]["OBJECTS_KMS_KEY_ARN"];
        let kms: Vec<(Option<&str>, &Value)> = scoped_statements(f)
            .into_iter()
            .filter(|(_, s)| s.to_string().contains("kms:"))
            .collect();
        let action = if binary == "event-processor" {
            assert!(variable.is_null(), "the processor needs no key to read");
            "kms:Decrypt"
        } else {
            assert_eq!(on.eval(variable), arn, "{binary}");
            assert_eq!(off.eval(variable), "", "{binary}");
            "kms:GenerateDataKey"
        };
        assert_eq!(kms.len(), 1, "{binary}: one KMS statement");
        let (condition, s) = kms[0];
        assert_eq!(condition, Some("ObjectsKeyOn"), "{binary}");
        assert_eq!(s["Effect"], "Allow", "{binary}");
        assert_eq!(listed(&s["Action"]), vec![Value::from(action)], "{binary}");
        assert_eq!(on.eval(&s["Resource"]), arn, "{binary}");
    }
}

/// Reads: the payload bucket's objects by the processor's role and the operators only, the
/// archive's by the operators only (the processor never reads it); with no operators
/// (OperatorPrincipalIds' default), the processor only and nobody. Whatever IAM grants anyone
/// else, the bucket policy refuses it (aws:userid: `<role id>:<session>` for a role session,
/// the user id for a user).
#[test]
fn the_buckets_deny_reads_to_everyone_but_the_processor_and_the_operators() {
    let t = template();
    let cfn = transformed();
    let operators = &t["Parameters"]["OperatorPrincipalIds"];
    assert_eq!(operators["Type"], "CommaDelimitedList");
    assert_eq!(operators["Default"], "", "nobody by default");
    let processor = format!("<{}.RoleId>:1", role_of(&cfn, "EventProcessorFunction"));
    let receivers: Vec<String> = providers::ALL
        .iter()
        .map(|(_, binary)| format!("<{}.RoleId>:1", role_of(&cfn, &function_id(&t, binary))))
        .collect();
    let operator_role = format!("{OPERATOR_ROLE}:alice");
    let root = "<AWS::AccountId>";
    for (some, list) in [
        (false, vec![""]),
        (true, vec![OPERATOR_ROLE, OPERATOR_USER]),
    ] {
        let deployed = Deployed::new(&t, &[("OperatorPrincipalIds", Value::from(list))]);
        assert_eq!(deployed.condition("HasOperators"), some);
        for (bucket, processor_reads) in [("PayloadBucket", true), ("ArchiveBucket", false)] {
            let statements = deployed.statements(&format!("{bucket}Policy"), "PolicyDocument");
            for action in ["s3:GetObject", "s3:GetObjectVersion"] {
                let reads =
                    |userid: &str| !bucket_denies(&statements, action, &[("aws:userid", userid)]);
                assert_eq!(
                    reads(&processor),
                    processor_reads,
                    "{bucket} {action}: the processor"
                );
                assert_eq!(
                    reads(&operator_role),
                    some,
                    "{bucket} {action}: an operator role"
                );
                assert_eq!(
                    reads(OPERATOR_USER),
                    some,
                    "{bucket} {action}: an operator user"
                );
                for userid in receivers.iter().map(String::as_str).chain([
                    root,
                    "anonymous",
                    "AROAOPERATOREXAMPLE0:alice",
                    "AROAOPERATOREXAMPLE011:alice",
                    "AIDAOPERATOREXAMPLE0",
                    "",
                ]) {
                    assert!(!reads(userid), "{bucket} {action}: {userid:?} may read");
                }
            }
        }
    }
}

/// A message may reference a payload for as long as it can live: the dedup horizon, and its life
/// on the queues. A standard queue's dead-letter queue keeps a message's enqueue time, so one pass
/// (the queue, then the dead-letter queue) lasts the longer of the two retentions, and each
/// `webhook-ops dlq redrive` sends it anew for another pass. The payloads must outlive the first
/// pass and one redrive (PayloadRetentionDays' description: each further redrive needs one pass
/// more).
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
    let (queue, dead_letter) = (
        retention_seconds("EventsQueue"),
        retention_seconds("EventsDeadLetterQueue"),
    );
    // Else a message expires in the dead-letter queue sooner than it would have on the queue.
    assert!(
        dead_letter >= queue,
        "the dead-letter queue keeps messages as long as the queue"
    );
    const REDRIVES: u64 = 1;
    let message_days = ((1 + REDRIVES) * queue.max(dead_letter)).div_ceil(DAY);
    assert!(
        payload_days > message_days,
        "payloads kept {payload_days} days, a message redriven {REDRIVES} time(s) lives {message_days} (and lifecycle rounds up a day)"
    );
    let description = t["Parameters"]["PayloadRetentionDays"]["Description"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let pass_days = queue.max(dead_letter) / DAY;
    assert!(
        description.contains(&format!(
            "{payload_days} = {pass_days} + {pass_days} + 1 day for lifecycle rounding covers the first pass and one redrive"
        )),
        "PayloadRetentionDays' description states the rule: {description}"
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
