//! Binary entry point (placeholder until the command set lands): runs the demo.

use clap::Parser;

#[derive(Parser)]
enum Cmd {
    /// Run a local mesh demo.
    Demo(mesh_cli::demo::DemoArgs),
    /// Run one demo application.
    #[command(hide = true)]
    DemoApp(mesh_cli::demo::DemoAppArgs),
    /// Run a local workload with its sidecar (explicit proxy mode).
    Run(mesh_cli::run::RunArgs),
}

fn main() -> anyhow::Result<()> {
    match Cmd::parse() {
        Cmd::Demo(a) => mesh_cli::demo::run(a),
        Cmd::DemoApp(a) => mesh_cli::demo::run_app(a),
        Cmd::Run(a) => std::process::exit(mesh_cli::run::run(a)?),
    }
}
