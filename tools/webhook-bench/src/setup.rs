//! The local AWS the functions talk to (moto, with the table and queues of `tools/dev_setup.py`),
//! optionally behind a TLS terminator with a generated certificate, and the cgroup that imitates
//! Lambda's CPU share.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// `KEY=VALUE` lines, comments and blanks skipped (local.env).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a helper that prints `PORT <n>` first; returns it and the port.
fn start_with_port(cmd: &mut Command, what: &str) -> Result<(Guard, u16), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut first)
        .map_err(|e| format!("{what}: {e}"))?;
    let port = first
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("{what} did not start (said {first:?})"))?;
    Ok((Guard(child), port))
}

pub struct Aws {
    /// What the functions get as AWS_ENDPOINT_URL (the proxy, or moto itself).
    pub endpoint: String,
    /// moto itself (plain HTTP), for the harness's own calls.
    pub moto: String,
    /// Table, queue URLs (dev_setup.py's output) and the CA bundle variables under TLS.
    pub env: Vec<(String, String)>,
    _moto: Guard,
    _proxy: Option<Guard>,
}

/// moto, behind bench/aws_proxy.py (keep-alive, optionally TLS) unless `direct`.
pub fn start_aws(python: &Path, tls: bool, ca_only: bool, direct: bool) -> Result<Aws, String> {
    let root = root();
    if !python.exists() {
        return Err(format!(
            "{} is missing: run `make venv` (moto[server] in the project virtualenv)",
            python.display()
        ));
    }
    let (moto, port) = start_with_port(
        Command::new(python)
            .arg(root.join("tools/moto_server.py"))
            .args([
                "--port",
                "0",
                "--parent-pid",
                &std::process::id().to_string(),
            ]),
        "moto",
    )?;
    let moto_endpoint = format!("http://127.0.0.1:{port}");
    let out = Command::new(python)
        .arg(root.join("tools/dev_setup.py"))
        .args(["--endpoint", &moto_endpoint, "--env-file"])
        .arg(root.join("local.env"))
        .output()
        .map_err(|e| format!("dev_setup.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "dev_setup.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| k != "AWS_ENDPOINT_URL")
        .collect();
    let (endpoint, proxy) = if direct {
        (moto_endpoint, None)
    } else {
        let mut cmd = Command::new(python);
        cmd.arg(root.join("bench/aws_proxy.py"))
            .args(["--upstream", &port.to_string()])
            .args(["--parent-pid", &std::process::id().to_string()]);
        if tls {
            let dir = root.join("target/webhook-bench/tls");
            let (cert, key, mut bundle) = certificate(&dir)?;
            if ca_only {
                bundle = dir.join("ca.pem");
            }
            cmd.arg("--cert").arg(&cert).arg("--key").arg(&key);
            let bundle = bundle.display().to_string();
            // rustls-native-certs (the SDK's default-https-client) reads SSL_CERT_FILE instead
            // of the system store; botocore reads AWS_CA_BUNDLE.
            env.push(("SSL_CERT_FILE".into(), bundle.clone()));
            env.push(("AWS_CA_BUNDLE".into(), bundle));
        }
        let (guard, proxy_port) = start_with_port(&mut cmd, "bench/aws_proxy.py")?;
        let scheme = if tls { "https" } else { "http" };
        (format!("{scheme}://127.0.0.1:{proxy_port}"), Some(guard))
    };
    env.push(("AWS_ENDPOINT_URL".into(), endpoint.clone()));
    Ok(Aws {
        endpoint,
        moto: format!("127.0.0.1:{port}"),
        env,
        _moto: moto,
        _proxy: proxy,
    })
}

/// A generated CA and an RSA-2048 server certificate it signs, for 127.0.0.1 and localhost (as
/// AWS's endpoints use RSA; webpki refuses a self-signed CA certificate as the server's own), and a
/// CA bundle made of the system's roots plus that CA, so that the binary parses a full store at
/// cold start as it does in Lambda. Returns (server certificate, its key, bundle).
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let p = |f: &str| dir.join(f);
    let openssl = |args: &[&str]| -> Result<(), String> {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("openssl: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("openssl {} failed", args.join(" ")))
        }
    };
    std::fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=webhook-bench CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ])?;
    let mut pem = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
    ]
    .iter()
    .find_map(|p| std::fs::read(p).ok())
    .unwrap_or_default();
    pem.extend(std::fs::read(p("ca.pem")).map_err(|e| e.to_string())?);
    std::fs::write(p("bundle.pem"), pem).map_err(|e| e.to_string())?;
    Ok((p("cert.pem"), p("key.pem"), p("bundle.pem")))
}

/// A CPU-limited cgroup: `percent` of one CPU per `period_us`. cgroup v2 (`cpu.max`) when its
/// cpu controller is available, else cgroup v1 (`cpu.cfs_quota_us`), which is the same CFS
/// bandwidth control.
pub struct Cgroup {
    dir: PathBuf,
    procs: File,
    pub kind: &'static str,
}

impl Cgroup {
    pub fn create(percent: f64, period_us: u64) -> Result<Cgroup, String> {
        let name = format!("webhook-bench-{}", std::process::id());
        let quota = ((percent / 100.0) * period_us as f64).round().max(1000.0) as u64;
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_cpu = std::fs::read_to_string(v2.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|c| c == "cpu"))
            .unwrap_or(false);
        let write = |p: PathBuf, v: String| {
            std::fs::write(&p, v).map_err(|e| format!("{}: {e}", p.display()))
        };
        let (dir, kind) = if v2_cpu {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            let dir = v2.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            write(dir.join("cpu.max"), format!("{quota} {period_us}"))?;
            (dir, "cgroup v2 cpu.max")
        } else {
            let v1 = Path::new("/sys/fs/cgroup/cpu");
            if !v1.join("cpu.cfs_quota_us").exists() {
                return Err(
                    "neither a cgroup v2 cpu controller nor cgroup v1 cpu is mounted".into(),
                );
            }
            let dir = v1.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
            write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
            (dir, "cgroup v1 cpu.cfs_quota_us")
        };
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|e| format!("cgroup.procs: {e}"))?;
        Ok(Cgroup { dir, procs, kind })
    }

    /// Makes the spawned process join this cgroup between fork and exec, so that its whole
    /// init runs under the limit.
    pub fn enter_on_spawn(&self, cmd: &mut Command) {
        join_on_spawn(cmd, &self.procs);
    }

    /// Times the group was throttled so far (`nr_throttled` of cpu.stat).
    pub fn throttled(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("nr_throttled "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

/// Makes the process `cmd` spawns write its pid to `procs` (a cgroup's `cgroup.procs`, open for
/// writing) between fork and exec: it joins that cgroup before its first instruction. `procs`
/// must stay open until the process has been spawned.
pub fn join_on_spawn(cmd: &mut Command, procs: &File) {
    use std::os::unix::process::CommandExt;
    let fd = procs.as_raw_fd();
    // SAFETY: only async-signal-safe calls (getpid, write) on a stack buffer between fork
    // and exec; the fd stays open in the parent while the command is spawned.
    unsafe {
        cmd.pre_exec(move || {
            let mut pid = libc::getpid() as u64;
            let mut buf = [0u8; 24];
            let mut at = buf.len();
            loop {
                at -= 1;
                buf[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let n = libc::write(fd, buf[at..].as_ptr().cast(), buf.len() - at);
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// One AWS JSON-protocol call straight to moto (which checks no signature), for the harness's
/// own table and queue per cold start.
pub fn moto_call(moto: &str, service: &str, target: &str, body: &Value) -> Result<Value, String> {
    use std::io::{Read, Write};
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {moto}\r\nContent-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: {target}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, \
         Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(moto).map_err(|e| format!("moto: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("moto: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("moto: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("moto {target}: {head} {body}"));
    }
    serde_json::from_str(body).map_err(|e| format!("moto {target}: {e}: {body}"))
}

/// A fresh table (as the template's: `pk`, on-demand) and queue on moto, named after `tag`:
/// moto's calls slow down as a queue fills (SQS SendMessage grew from ~10 ms to ~150 ms over
/// 10 000 messages here), so each cold start gets its own, with its dead-letter queue. Returns
/// EVENTS_TABLE, EVENTS_QUEUE_URL and DEAD_LETTER_QUEUE_URL.
pub fn fresh_stack(moto: &str, tag: &str) -> Result<Vec<(String, String)>, String> {
    let table = format!("bench-{tag}");
    moto_call(
        moto,
        "dynamodb",
        "DynamoDB_20120810.CreateTable",
        &json!({
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        }),
    )?;
    let queue = moto_call(
        moto,
        "sqs",
        "AmazonSQS.CreateQueue",
        &json!({"QueueName": format!("bench-{tag}"), "Attributes": {"MaximumMessageSize": "1048576"}}),
    )?;
    let url = queue["QueueUrl"]
        .as_str()
        .ok_or_else(|| format!("CreateQueue answered {queue}"))?
        .to_owned();
    // Where the processor moves the messages it refuses (shared::trust).
    let dlq = moto_call(
        moto,
        "sqs",
        "AmazonSQS.CreateQueue",
        &json!({"QueueName": format!("bench-{tag}-dlq")}),
    )?;
    let dlq = dlq["QueueUrl"]
        .as_str()
        .ok_or_else(|| format!("CreateQueue answered {dlq}"))?
        .to_owned();
    Ok(vec![
        ("EVENTS_TABLE".into(), table),
        ("EVENTS_QUEUE_URL".into(), url),
        ("DEAD_LETTER_QUEUE_URL".into(), dlq),
    ])
}
