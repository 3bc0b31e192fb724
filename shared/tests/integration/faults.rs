//! A fault-injecting HTTP proxy between the real SDK clients and moto: it forwards each request
//! unchanged unless a rule names its operation (the `x-amz-target` header, e.g. `PutItem` or
//! `SendMessage`), and then delays it, holds it forever, answers an AWS error itself (a 500, or a
//! throttle the SDK retries), or fails chosen entries of a SendMessageBatch as SQS reports them.
//! The code under test sees real sockets and real AWS error bodies, not a refused connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward after this long.
    Delay(Duration),
    /// Never forward, never answer.
    Hang,
    /// Forward (the call lands), but never pass its answer on: the caller waits forever.
    HangAnswer,
    /// Answer this status with an AWS JSON error of this type, without forwarding.
    Error { status: u16, kind: &'static str },
    /// SendMessageBatch: entries whose body contains this text are not forwarded and are listed
    /// under `Failed`, as SQS reports a per-entry failure; the rest go through.
    FailEntries(&'static str),
}

impl Fault {
    /// An internal error (HTTP 500): the SDK retries it, then gives up.
    pub const INTERNAL: Fault = Fault::Error {
        status: 500,
        kind: "InternalServerError",
    };
    /// DynamoDB's throttle.
    pub const DYNAMO_THROTTLE: Fault = Fault::Error {
        status: 400,
        kind: "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    };
    /// The throttle of SQS and Secrets Manager.
    pub const THROTTLE: Fault = Fault::Error {
        status: 400,
        kind: "ThrottlingException",
    };
}

/// A rule: the operation it matches, text its body must contain, the fault, and how many more
/// requests it applies to.
type Rule = (String, Option<&'static str>, Fault, Option<usize>);

/// Random faults: each request of the listed operations fails with this probability, as an
/// error, a throttle or a delay past the receivers' deadline, chosen at random.
#[derive(Clone, Default)]
struct Chaos {
    operations: Vec<String>,
    /// Per million requests.
    rate_ppm: u64,
    delay: Duration,
    state: u64,
}

#[derive(Clone, Default)]
pub struct Proxy {
    rules: Arc<Mutex<Vec<Rule>>>,
    chaos: Arc<Mutex<Chaos>>,
    /// Faults injected at random, by operation.
    pub injected: Arc<Mutex<std::collections::BTreeMap<String, usize>>>,
    /// Operations seen, in order (`DynamoDB_20120810.PutItem`, `AmazonSQS.SendMessage`, …).
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:<port>`) on a free loopback port; returns
    /// it and its endpoint. It runs on the calling test's runtime.
    pub async fn start(upstream: &str) -> (Proxy, String) {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let proxy = Proxy::default();
        let serving = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (proxy, upstream) = (serving.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = proxy.serve(client, &upstream).await;
                });
            }
        });
        (proxy, endpoint)
    }

    /// Applies `fault` to every request of `operation` (`PutItem`, `SendMessageBatch`, …).
    pub fn inject(&self, operation: &str, fault: Fault) {
        self.rules
            .lock()
            .unwrap()
            .push((operation.to_owned(), None, fault, None));
    }

    /// Applies `fault` to the requests of `operation` whose body contains `text` (one event's
    /// PutItem among a batch's).
    pub fn inject_matching(&self, operation: &str, text: &'static str, fault: Fault) {
        self.rules
            .lock()
            .unwrap()
            .push((operation.to_owned(), Some(text), fault, None));
    }

    /// Applies `fault` to the next `times` requests of `operation` only.
    pub fn inject_times(&self, operation: &str, fault: Fault, times: usize) {
        self.rules
            .lock()
            .unwrap()
            .push((operation.to_owned(), None, fault, Some(times)));
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
        self.chaos.lock().unwrap().rate_ppm = 0;
    }

    /// Fails `rate` of the requests of `operations` at random (seeded, so a run repeats): an
    /// internal error, a throttle, or a `delay` (past the deadline: the caller gives up).
    pub fn chaos(&self, operations: &[&str], rate: f64, delay: Duration, seed: u64) {
        *self.chaos.lock().unwrap() = Chaos {
            operations: operations.iter().map(|o| (*o).to_owned()).collect(),
            rate_ppm: (rate * 1e6) as u64,
            delay,
            state: seed | 1,
        };
    }

    fn random_fault(&self, operation: &str) -> Option<Fault> {
        let mut chaos = self.chaos.lock().unwrap();
        if chaos.rate_ppm == 0
            || !chaos
                .operations
                .iter()
                .any(|o| operation.ends_with(&format!(".{o}")))
        {
            return None;
        }
        let (rate_ppm, delay) = (chaos.rate_ppm, chaos.delay);
        let mut next = || {
            // xorshift64*: enough randomness for fault injection, no dependency.
            chaos.state ^= chaos.state >> 12;
            chaos.state ^= chaos.state << 25;
            chaos.state ^= chaos.state >> 27;
            chaos.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        if next() % 1_000_000 >= rate_ppm {
            return None;
        }
        let fault = match next() % 3 {
            0 => Fault::INTERNAL,
            1 if operation.starts_with("DynamoDB") => Fault::DYNAMO_THROTTLE,
            1 => Fault::THROTTLE,
            _ => Fault::Delay(delay),
        };
        let name = operation.rsplit('.').next().unwrap_or(operation).to_owned();
        *self.injected.lock().unwrap().entry(name).or_default() += 1;
        Some(fault)
    }

    /// How many requests of `operation` reached the proxy.
    pub fn count(&self, operation: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|op| op.ends_with(&format!(".{operation}")))
            .count()
    }

    fn fault_for(&self, operation: &str, body: &[u8]) -> Option<Fault> {
        if let Some(fault) = self.random_fault(operation) {
            return Some(fault);
        }
        let body = String::from_utf8_lossy(body);
        let mut rules = self.rules.lock().unwrap();
        let rule = rules.iter_mut().find(|(name, text, _, left)| {
            operation.ends_with(&format!(".{name}"))
                && text.is_none_or(|t| body.contains(t))
                && *left != Some(0)
        })?;
        if let Some(left) = &mut rule.3 {
            *left -= 1;
        }
        Some(rule.2.clone())
    }

    async fn serve(&self, mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
        let mut server = TcpStream::connect(upstream).await?;
        loop {
            let Some((head, body)) = read_message(&mut client).await? else {
                return Ok(());
            };
            let operation = header(&head, "x-amz-target").unwrap_or_default();
            self.seen.lock().unwrap().push(operation.clone());
            let mut failing = Vec::new();
            let mut hold_answer = false;
            let (head, body) = match self.fault_for(&operation, &body) {
                None => (head, body),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::HangAnswer) => {
                    hold_answer = true;
                    (head, body)
                }
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    (head, body)
                }
                Some(Fault::Error { status, kind }) => {
                    let answer = json!({"__type": kind, "message": "injected fault"}).to_string();
                    let head = format!(
                        "HTTP/1.1 {status} Injected\r\ncontent-type: application/x-amz-json-1.0\r\n\
                         x-amzn-query-error: {kind};Sender\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    client.write_all(head.as_bytes()).await?;
                    client.write_all(answer.as_bytes()).await?;
                    continue;
                }
                Some(Fault::FailEntries(marker)) => {
                    let mut request: Value = serde_json::from_slice(&body).expect("batch JSON");
                    let entries = request["Entries"].as_array().cloned().unwrap_or_default();
                    let (fail, keep): (Vec<Value>, Vec<Value>) = entries
                        .into_iter()
                        .partition(|e| e["MessageBody"].as_str().unwrap_or("").contains(marker));
                    failing = fail;
                    request["Entries"] = Value::Array(keep);
                    with_body(&head, request.to_string().into_bytes())
                }
            };
            let mut answer = if has_entries_or_is_not_a_batch(&body) {
                server.write_all(&head).await?;
                server.write_all(&body).await?;
                match read_message(&mut server).await? {
                    Some(answer) => answer,
                    None => return Ok(()),
                }
            } else {
                // Every entry fails: SQS still answers 200, with them all under `Failed`.
                with_body(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\r\n",
                    br#"{"Successful":[]}"#.to_vec(),
                )
            };
            if hold_answer {
                std::future::pending::<()>().await;
            }
            if !failing.is_empty() {
                let mut reported: Value = serde_json::from_slice(&answer.1).expect("batch answer");
                reported["Failed"] = failing
                    .iter()
                    .map(|e| {
                        json!({"Id": e["Id"], "SenderFault": false, "Code": "InternalError",
                            "Message": "injected entry failure"})
                    })
                    .collect();
                answer = with_body(&answer.0, reported.to_string().into_bytes());
            }
            client.write_all(&answer.0).await?;
            client.write_all(&answer.1).await?;
        }
    }
}

/// False only for a SendMessageBatch whose entries were all taken out.
fn has_entries_or_is_not_a_batch(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("Entries")
                .and_then(Value::as_array)
                .map(|e| !e.is_empty())
        })
        .unwrap_or(true)
}

/// `head` with its `Content-Length` set for `body`.
fn with_body(head: &[u8], body: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<&str> = text
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("content-length:"))
        .collect();
    let length = format!("content-length: {}", body.len());
    lines.push(&length);
    (format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes(), body)
}

pub fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One HTTP/1.1 message: its head (through the blank line) and a `Content-Length` body (the SDK
/// and moto both send lengths). `None` at end of stream.
pub async fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(Some((head, body)))
}
