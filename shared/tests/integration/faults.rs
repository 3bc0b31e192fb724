//! A fault-injecting HTTP proxy between the real SDK clients and moto: it forwards each request
//! unchanged unless a rule names its operation (the `x-amz-target` header, e.g. `PutItem` or
//! `SendMessage`), and then delays it or holds it forever. The receiver under test sees real
//! latency from a real socket, not a refused connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward after this long.
    Delay(Duration),
    /// Never forward, never answer.
    Hang,
}

#[derive(Clone, Default)]
pub struct Proxy {
    rules: Arc<Mutex<Vec<(String, Fault)>>>,
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

    /// Applies `fault` to every operation whose name contains `operation`.
    pub fn inject(&self, operation: &str, fault: Fault) {
        self.rules
            .lock()
            .unwrap()
            .push((operation.to_owned(), fault));
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    fn fault_for(&self, operation: &str) -> Option<Fault> {
        self.rules
            .lock()
            .unwrap()
            .iter()
            .find(|(name, _)| operation.contains(name.as_str()))
            .map(|(_, f)| *f)
    }

    async fn serve(&self, mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
        let mut server = TcpStream::connect(upstream).await?;
        loop {
            let Some((head, body)) = read_message(&mut client).await? else {
                return Ok(());
            };
            let operation = header(&head, "x-amz-target").unwrap_or_default();
            self.seen.lock().unwrap().push(operation.clone());
            match self.fault_for(&operation) {
                Some(Fault::Hang) => {
                    std::future::pending::<()>().await;
                }
                Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            server.write_all(&head).await?;
            server.write_all(&body).await?;
            let Some((head, body)) = read_message(&mut server).await? else {
                return Ok(());
            };
            client.write_all(&head).await?;
            client.write_all(&body).await?;
        }
    }
}

fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// One HTTP/1.1 message: its head (through the blank line) and a `Content-Length` body (the SDK
/// and moto both send lengths). `None` at end of stream.
async fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
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
