//! The function binaries run as Lambda runs them: a process started with the Runtime API's
//! address, polling `GET /2018-06-01/runtime/invocation/next` and posting each answer. This host
//! emulates that API on loopback, so tests can deliver an invocation to a real process, watch it
//! work through the fault proxy, and kill it (SIGKILL) at a chosen moment.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::faults::{header, read_message};

#[derive(Default)]
struct State {
    queued: VecDeque<(String, Value)>,
    /// Processes waiting in `GET next` now.
    polling: usize,
    answers: HashMap<String, Value>,
    errors: HashMap<String, Value>,
}

/// One emulated Runtime API; any number of processes may poll it.
#[derive(Clone)]
pub struct RuntimeApi {
    pub address: String,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    answered: Arc<Notify>,
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind runtime API");
        let api = RuntimeApi {
            address: listener.local_addr().unwrap().to_string(),
            state: Arc::default(),
            arrived: Arc::default(),
            answered: Arc::default(),
        };
        let serving = api.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let api = serving.clone();
                tokio::spawn(async move {
                    let _ = api.serve(stream).await;
                });
            }
        });
        api
    }

    /// Queues an invocation; returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.state
            .lock()
            .unwrap()
            .queued
            .push_back((id.clone(), event));
        self.arrived.notify_waiters();
        self.arrived.notify_one();
        id
    }

    /// The function's answer to `id`, waiting up to `within`.
    pub async fn answer(&self, id: &str, within: Duration) -> Option<Value> {
        let wait = async {
            loop {
                let notified = self.answered.notified();
                if let Some(a) = self.state.lock().unwrap().answers.get(id) {
                    return a.clone();
                }
                if let Some(e) = self.state.lock().unwrap().errors.get(id) {
                    panic!("invocation {id} failed: {e}");
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait).await.ok()
    }

    async fn next(&self) -> (String, Value) {
        self.state.lock().unwrap().polling += 1;
        loop {
            let notified = self.arrived.notified();
            {
                let mut state = self.state.lock().unwrap();
                if let Some(next) = state.queued.pop_front() {
                    state.polling -= 1;
                    return next;
                }
            }
            notified.await;
        }
    }

    /// Waits until `n` processes wait for an invocation (each has finished its init), at most
    /// `within`; whether they do.
    pub async fn until_polling(&self, n: usize, within: Duration) -> bool {
        let start = tokio::time::Instant::now();
        while start.elapsed() < within {
            if self.state.lock().unwrap().polling >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    async fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let Some((head, body)) = read_message(&mut stream).await? else {
                return Ok(());
            };
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let _ = header(&head, "host");
            if path.ends_with("/invocation/next") {
                let (id, event) = self.next().await;
                let body = event.to_string();
                let deadline = (time::OffsetDateTime::now_utc().unix_timestamp() + 60) * 1000;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     lambda-runtime-aws-request-id: {id}\r\nlambda-runtime-deadline-ms: {deadline}\r\n\
                     lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:test\r\n\
                     lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\
                     content-length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                continue;
            }
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(id) = path
                .strip_suffix("/response")
                .and_then(|p| p.rsplit('/').next())
            {
                self.state
                    .lock()
                    .unwrap()
                    .answers
                    .insert(id.to_owned(), value);
            } else if let Some(id) = path
                .strip_suffix("/error")
                .and_then(|p| p.rsplit('/').next())
            {
                self.state
                    .lock()
                    .unwrap()
                    .errors
                    .insert(id.to_owned(), value);
            }
            self.answered.notify_waiters();
            stream
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await?;
        }
    }
}

/// A function binary of this workspace, built (if needed) by cargo.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let root = crate::samples::root();
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|b| b == name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", name])
            .current_dir(&root)
            .status()
            .expect("cargo build");
        assert!(status.success(), "cargo build -p {name}");
        built.push(name.to_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(name)
}

/// A function process polling `api`, its stdout (the JSON logs) collected.
pub struct Function {
    child: Child,
    pub logs: Arc<Mutex<String>>,
}

impl Function {
    pub fn start(name: &str, api: &RuntimeApi, env: &[(&str, &str)]) -> Function {
        let mut child = Command::new(binary(name))
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let logs = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Function { child, logs }
    }

    /// SIGKILL: no cleanup, no answer, as when Lambda's sandbox dies.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_count(&self, text: &str) -> usize {
        self.logs.lock().unwrap().matches(text).count()
    }

    /// The count of `text` in the logs once it reaches `at_least` (stdout is read by a thread,
    /// a little behind the process), or what it is after 10 s.
    pub async fn logged(&self, text: &str, at_least: usize) -> usize {
        logged(std::slice::from_ref(self), text, at_least).await
    }
}

/// The count of `text` across `functions`' logs once it reaches `at_least`, or after 10 s.
pub async fn logged(functions: &[Function], text: &str, at_least: usize) -> usize {
    let count = || functions.iter().map(|f| f.log_count(text)).sum::<usize>();
    for _ in 0..200 {
        if count() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count()
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
