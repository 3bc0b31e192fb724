//! `make dev` hands the functions one environment file (`tools/functions_env.sh`): it must be one
//! `cargo lambda watch` reads, with the values our own readers get from local.env. (Its parser
//! refuses an unquoted value containing `=`, which STANDARD_WEBHOOK_SECRET's base64 padding is:
//! `make dev` stopped at "invalid environment file" until the script quoted such values.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use shared::config::Env;

#[test]
fn cargo_lambda_watch_reads_the_dev_environment_and_the_values_are_local_envs() {
    let root = crate::samples::root();
    let out = Command::new(root.join("tools/functions_env.sh"))
        .arg(root.join("local.env"))
        .output()
        .expect("run tools/functions_env.sh");
    assert!(out.status.success(), "{out:?}");
    let file = std::env::temp_dir().join(format!("functions-{}.env", uuid::Uuid::new_v4()));
    std::fs::write(&file, &out.stdout).unwrap();

    // The same values as local.env gives, quoted or not.
    let local = std::fs::read_to_string(root.join("local.env")).unwrap();
    let (ours, theirs) = (
        Env::from_env_file(&root.join("local.env")).unwrap(),
        Env::from_env_file(&file).unwrap(),
    );
    let names: Vec<&str> = local
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    assert!(names.contains(&"STANDARD_WEBHOOK_SECRET"));
    for name in names {
        assert_eq!(ours.get(name), theirs.get(name), "{name}");
    }

    // cargo lambda watch starts with it: its server comes up, or it stops at once on the file.
    let cargo_lambda = root.join(".venv/bin/cargo-lambda");
    assert!(
        cargo_lambda.exists(),
        "{} is missing: run `make venv` (make test does); this test never skips",
        cargo_lambda.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut watch = Command::new(&cargo_lambda)
        .args(["lambda", "watch", "--invoke-address", "127.0.0.1"])
        .args(["--invoke-port", &port.to_string()])
        .arg("--env-file")
        .arg(&file)
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cargo lambda watch");
    let (lines, seen) = mpsc::channel();
    for stream in [
        Box::new(watch.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(watch.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
    }
    drop(lines);
    let mut said = Vec::new();
    let started = loop {
        match seen.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(line) if line.contains("starting Runtime server") => break true,
            Ok(line) => said.push(line),
            // Both streams closed (it exited) or nothing for two minutes.
            Err(_) => break false,
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = std::fs::remove_file(&file);
    assert!(
        started,
        "cargo lambda watch did not start:\n{}",
        said.join("\n")
    );
}
