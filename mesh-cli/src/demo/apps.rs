//! The demo's applications: `api` (v1, v2) answers with its version; `web` calls `api` through
//! its sidecar's outbound listener with a plain `Host: api` request, knowing nothing else.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// `mesh-cli demo-app`: run one demo application as its own process (e.g. under `mesh-cli run`).
#[derive(Clone, Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Service name the app answers as.
    #[arg(long)]
    pub service: String,
    #[arg(long, default_value = "v1")]
    pub version: String,
    #[arg(long, default_value_t = 9080)]
    pub port: u16,
    /// Call this service on every request: through `HTTP_PROXY` (the sidecar's outbound) when
    /// set, else by its plain name on `--port` (interception: the sidecar answers the name
    /// with the service VIP and captures the connection).
    #[arg(long)]
    pub call: Option<String>,
}

/// Lookups of the called service by name while the mesh learns it: 100 tries, 100 ms apart.
const LOOKUP_TRIES: usize = 100;

pub async fn bind() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

/// Runs a demo app process until killed.
pub fn run_app(args: DemoAppArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("0.0.0.0", args.port)).await?;
        let proxy = std::env::var("HTTP_PROXY").ok().and_then(|p| {
            p.trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .ok()
        });
        let proxy = match (proxy, &args.call) {
            (None, Some(name)) => lookup(name, args.port).await,
            (p, _) => p,
        };
        let service: &'static str = Box::leak(args.service.into_boxed_str());
        let version: &'static str = Box::leak(args.version.into_boxed_str());
        serve(listener, service, version, proxy).await;
        Ok(())
    })
}

/// The address `name:port` resolves to (the service VIP under interception), or None.
async fn lookup(name: &str, port: u16) -> Option<SocketAddr> {
    for _ in 0..LOOKUP_TRIES {
        if let Ok(mut addrs) = tokio::net::lookup_host((name, port)).await
            && let Some(a) = addrs.find(SocketAddr::is_ipv4)
        {
            return Some(a);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// Serves until the task is aborted. `call`: the outbound listener through which `web` calls
/// `api`.
pub async fn serve(
    listener: TcpListener,
    service: &'static str,
    version: &'static str,
    call: Option<SocketAddr>,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let (status, body) = match call {
                        None => (StatusCode::OK, format!("{service} {version}")),
                        Some(proxy) => call_api(&client, proxy, service, version).await,
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

async fn call_api(
    client: &Client<HttpConnector, Empty<Bytes>>,
    proxy: SocketAddr,
    service: &str,
    version: &str,
) -> (StatusCode, String) {
    let req = Request::get(format!("http://{proxy}/"))
        .header("host", "api")
        .body(Empty::new())
        .expect("static request");
    match client.request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let cause = resp
                .headers()
                .get("x-mesh-error")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            let api = cause.map_or(body, |c| format!("error {c}"));
            (status, format!("{service} {version} -> {api}"))
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("{service} {version} -> error {e}"),
        ),
    }
}

/// Status of a plain GET, or None when the server is unreachable.
pub async fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, &addr.to_string(), path)
        .await
        .map(|(status, _)| status)
}

/// Status and body of a GET sent to `addr` with `Host: host` (e.g. through a sidecar's
/// outbound), or None when unreachable.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
