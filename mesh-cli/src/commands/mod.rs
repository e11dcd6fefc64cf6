//! Dispatch from the parsed command line to each command's implementation.

mod inject;
mod ops;
mod proxy;
pub(crate) mod route;

use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::error::{CliError, Result};

pub fn run(cli: Cli) -> Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Inject(args) => inject::inject(&args),
        Command::Uninject(args) => inject::uninject(&args),
        Command::Demo(args) => {
            crate::demo::run(args).map_err(|e| CliError::server(format!("demo: {e:#}")))
        }
        Command::Run(args) => match crate::run::run(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(CliError::server(format!("run: {e:#}"))),
        },
        Command::DemoApp(args) => {
            crate::demo::run_app(args).map_err(|e| CliError::server(format!("demo-app: {e:#}")))
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mesh-cli",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Route(cmd) => net(route::run(&global, cmd.qualified())),
        Command::Policy(cmd) => net(ops::policy(&global, cmd.qualified())),
        Command::Service(cmd) => net(ops::service(&global, cmd.qualified())),
        Command::Status => net(ops::status(&global)),
        Command::Endpoints(args) => net(ops::endpoints(&global, args.qualified())),
        Command::Token(cmd) => net(ops::token(&global, cmd)),
        Command::Identity(cmd) => net(ops::identity(&global, cmd)),
        Command::Runtime(cmd) => net(ops::runtime(&global, cmd)),
        Command::Check(args) => net(ops::check(&global, &args)),
        Command::ProxyConfig(args) => net(proxy::config(&global, args)),
        Command::Stat(args) => net(proxy::stat(&global, args)),
        Command::Explain(args) => net(proxy::explain(&global, args)),
    }
}

/// One short-lived command: a current-thread runtime is all it needs.
fn net(fut: impl Future<Output = Result<()>>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::server(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(fut)
}
