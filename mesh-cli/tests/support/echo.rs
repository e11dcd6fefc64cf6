//! Backend apps that record what reaches them (method, path, headers) and answer per a fixed
//! behaviour, and a client that returns a reply's status, headers and body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How an [`Echo`] app answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the app's version as the body.
    Ok,
    /// 200, after this delay.
    After(Duration),
    /// 503 to every odd-numbered request it receives (1st, 3rd, …), 200 to the others.
    FailOdd,
    /// 200 to every request, after this delay for the odd-numbered ones.
    SlowOdd(Duration),
}

/// One request as the app saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent on the request line.
    pub target: String,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A recording HTTP/1.1 app; aborted on drop.
pub struct Echo {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    /// How many requests reached the app so far.
    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// The requests after the first `from`.
    pub fn seen_since(&self, from: usize) -> Vec<Seen> {
        self.seen.lock()[from..].to_vec()
    }
}

pub async fn echo(version: &'static str, answer: Answer) -> Echo {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicUsize::new(0));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (record, n) = (record.clone(), n.clone());
            tokio::spawn(serve(s, version, answer, record, n));
        }
    });
    Echo { port, seen, task }
}

/// Serves keep-alive requests on one connection until the peer closes it.
async fn serve(
    mut s: TcpStream,
    version: &'static str,
    answer: Answer,
    record: Arc<Mutex<Vec<Seen>>>,
    n: Arc<AtomicUsize>,
) {
    // Heads here are small; 16 KiB holds any head these tests send.
    let mut buf = vec![0u8; 16 * 1024];
    let mut have = 0;
    loop {
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let seen = parse_head(&head);
            let body_len: usize = seen
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // Bodies are empty or tiny in these tests; read what is missing of this one.
            while have < end + 4 + body_len {
                match s.read(&mut buf[have..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => have += k,
                }
            }
            record.lock().push(seen);
            let nth = n.fetch_add(1, Ordering::SeqCst) + 1;
            let status = match answer {
                Answer::Ok => "200 OK",
                Answer::After(d) => {
                    tokio::time::sleep(d).await;
                    "200 OK"
                }
                Answer::FailOdd if nth % 2 == 1 => "503 Service Unavailable",
                Answer::FailOdd => "200 OK",
                Answer::SlowOdd(d) => {
                    if nth % 2 == 1 {
                        tokio::time::sleep(d).await;
                    }
                    "200 OK"
                }
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{version}",
                version.len()
            );
            if s.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            buf.copy_within(end + 4 + body_len..have, 0);
            have -= end + 4 + body_len;
        }
        if have == buf.len() {
            return;
        }
        match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => have += k,
        }
    }
}

fn parse_head(head: &str) -> Seen {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        method,
        target,
        headers,
    }
}

/// A reply as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The cause of a response the proxy made itself (`x-mesh-error`).
    pub fn cause(&self) -> Option<&str> {
        self.header("x-mesh-error")
    }
}

/// `METHOD http://{host}{path}` through a sidecar's outbound listener (explicit proxy form),
/// one request per connection.
pub async fn send(
    outbound: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Reply> {
    let mut req = format!(
        "{method} http://{host}{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let fut = async {
        let mut s = TcpStream::connect(outbound).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Reply {
            status,
            headers,
            body: body.to_string(),
        })
    };
    // Requests here take milliseconds, or a few seconds where a test delays them on purpose;
    // 10 s only bounds a hang.
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .ok()
        .flatten()
}
