//! `mesh-cli demo`: a whole local mesh on embedded defaults — control plane, demo apps with
//! sidecars, a load generator, a live table, and a canary shift applied mid-run.

mod apps;
mod load;
mod procs;

use std::time::Duration;

use anyhow::Context;
use mesh_proto::admin::v1::SetRouteRequest;
use mesh_proto::types::v1::{Route, RouteRule, WeightedBackend};

pub use apps::{DemoAppArgs, run_app};
use procs::Mesh;

/// Options of `mesh-cli demo`.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = "Example:\n  mesh-cli demo --duration 30")]
pub struct DemoArgs {
    /// Stop by itself after this many seconds (non-interactive runs, CI). Default: until Ctrl-C.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Requests per second the load generator sends to `web`.
    #[arg(long, default_value_t = 50)]
    pub rps: u32,
    /// Seconds between table refreshes.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Explicit mode even as root: no namespaces, apps reach their sidecar through HTTP_PROXY.
    #[arg(long)]
    pub explicit: bool,
}

/// The canary plan: (share of the run elapsed, v1 weight, v2 weight).
const PLAN: [(f64, u32, u32); 3] = [(0.0, 100, 0), (1.0 / 3.0, 80, 20), (2.0 / 3.0, 20, 80)];

/// Runs the demo; returns when the duration ends or on Ctrl-C, leaving nothing behind.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "mesh demo: starting the control plane, 3 workloads with sidecars and a load generator"
    );
    // As root the workloads run intercepted, each in its own network namespace.
    let intercept = !args.explicit && nix::unistd::geteuid().is_root();
    if intercept {
        println!("mesh demo: interception mode (root): api and web run in network namespaces");
    }
    let mut mesh = Mesh::start(intercept).await?;
    let result = drive(&mut mesh, &args).await;
    println!("mesh demo: stopping every process");
    mesh.stop(result.is_err()).await;
    result
}

async fn drive(mesh: &mut Mesh, args: &DemoArgs) -> anyhow::Result<()> {
    if let Ok(ep) = std::env::var("MESH_OTLP_ENDPOINT") {
        println!(
            "traces: exporting to {ep}; view them in your collector (e.g. rotel-agent --debug-log traces, or Jaeger)"
        );
    } else {
        println!(
            "traces: set MESH_OTLP_ENDPOINT=http://127.0.0.1:4317 to export spans to an OTLP collector"
        );
    }
    let total = args.duration.map(Duration::from_secs);
    let stats = load::Stats::default();
    let loadgen = tokio::spawn(load::generate(
        mesh.client_outbound,
        args.rps,
        stats.clone(),
        total,
    ));
    let start = tokio::time::Instant::now();
    let mut step = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(args.interval.max(1)));
    ticker.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Without a duration the canary steps every 20 s, so a watcher sees each phase.
    let phase_len = total.map_or(Duration::from_secs(60), |t| t);
    loop {
        let elapsed = start.elapsed();
        while step < PLAN.len() && elapsed.as_secs_f64() >= PLAN[step].0 * phase_len.as_secs_f64() {
            let (_, v1, v2) = PLAN[step];
            set_split(mesh, v1, v2).await?;
            step += 1;
        }
        if total.is_some_and(|t| elapsed >= t) {
            break;
        }
        tokio::select! {
            _ = ticker.tick() => stats.print_table(),
            _ = &mut ctrl_c => { println!(); break; }
        }
    }
    loadgen.abort();
    stats.print_summary();
    Ok(())
}

async fn set_split(mesh: &mut Mesh, v1: u32, v2: u32) -> anyhow::Result<()> {
    println!("\n$ mesh-cli route set api --to v1={v1},v2={v2}");
    let backends = [("v1", v1), ("v2", v2)]
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(subset, weight)| WeightedBackend {
            service: "api".into(),
            subset: subset.into(),
            weight,
        })
        .collect();
    let route = Route {
        service: "api".into(),
        rules: vec![RouteRule {
            name: "canary".into(),
            backends,
            ..Default::default()
        }],
    };
    let t0 = tokio::time::Instant::now();
    let resp = mesh
        .admin()
        .await?
        .set_route(SetRouteRequest {
            route: Some(route),
            dry_run: false,
            expected_version: String::new(),
        })
        .await
        .context("route set api")?
        .into_inner();
    println!(
        "route api: version {} accepted in {:.1} ms",
        resp.version,
        t0.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
