//! The Lambda Runtime API, emulated on loopback with timestamps: when a `GET .../next` arrives,
//! when its event is handed out, and when the answer has been read in full. One invocation at a
//! time, as Lambda runs one per execution environment.

use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A function waiting for its next event.
pub struct Poll {
    pub at: Instant,
    reply: oneshot::Sender<(String, Vec<u8>)>,
}

impl Poll {
    /// Hands `event` out as invocation `id`; returns the instant it was handed out.
    pub fn deliver(self, id: &str, event: Vec<u8>) -> Instant {
        let at = Instant::now();
        let _ = self.reply.send((id.to_owned(), event));
        at
    }
}

#[derive(Debug)]
pub enum Posted {
    Response { id: String, body: Vec<u8> },
    Error { id: String, body: Vec<u8> },
    InitError { body: Vec<u8> },
}

pub struct Answer {
    pub at: Instant,
    pub posted: Posted,
}

pub struct RuntimeApi {
    pub address: String,
    pub polls: mpsc::UnboundedReceiver<Poll>,
    pub answers: mpsc::UnboundedReceiver<Answer>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (poll_tx, polls) = mpsc::unbounded_channel();
        let (answer_tx, answers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (p, a) = (poll_tx.clone(), answer_tx.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, p, a).await;
                });
            }
        });
        Ok(RuntimeApi {
            address,
            polls,
            answers,
        })
    }

    /// The next `GET .../invocation/next`.
    pub async fn poll(&mut self) -> Option<Poll> {
        self.polls.recv().await
    }

    /// The next posted answer (response, invocation error or init error).
    pub async fn answer(&mut self) -> Option<Answer> {
        self.answers.recv().await
    }

    /// Drops polls and answers left over from a previous process.
    pub fn drain(&mut self) {
        while self.polls.try_recv().is_ok() {}
        while self.answers.try_recv().is_ok() {}
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse().unwrap_or(0);
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
    }
    Ok(Some(Request { method, path, body }))
}

async fn serve(
    stream: TcpStream,
    polls: mpsc::UnboundedSender<Poll>,
    answers: mpsc::UnboundedSender<Answer>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader).await? {
        let at = Instant::now();
        if request.method == "GET" && request.path.ends_with("/invocation/next") {
            let (reply, wait) = oneshot::channel();
            if polls.send(Poll { at, reply }).is_err() {
                return Ok(());
            }
            let Ok((id, event)) = wait.await else {
                return Ok(());
            };
            let deadline = (time::OffsetDateTime::now_utc().unix_timestamp() + 30) * 1000;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 lambda-runtime-aws-request-id: {id}\r\nlambda-runtime-deadline-ms: {deadline}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:bench\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000;Sampled=0\r\n\
                 content-length: {}\r\n\r\n",
                event.len()
            );
            let mut message = head.into_bytes();
            message.extend_from_slice(&event);
            reader.get_mut().write_all(&message).await?;
            continue;
        }
        let id = |suffix: &str| {
            request
                .path
                .strip_suffix(suffix)
                .and_then(|p| p.rsplit('/').next())
                .map(str::to_owned)
        };
        let posted = if request.path.ends_with("/init/error") {
            Posted::InitError { body: request.body }
        } else if let Some(id) = id("/response") {
            Posted::Response {
                id,
                body: request.body,
            }
        } else if let Some(id) = id("/error") {
            Posted::Error {
                id,
                body: request.body,
            }
        } else {
            reader
                .get_mut()
                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        };
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"status\":\"OK\"}\n")
            .await?;
        let _ = answers.send(Answer { at, posted });
    }
    Ok(())
}
