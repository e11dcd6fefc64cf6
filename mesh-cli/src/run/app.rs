//! The workload's app process: its environment (explicit proxy mode), signals, grace and exit code.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::sidecar::SidecarAddrs;
use super::{RunArgs, StopSignals};

/// Loopback never goes through the proxy: the app's own health checks and local helpers.
const NO_PROXY: &str = "localhost,127.0.0.1";
/// Secrets meant for the mesh, not for the workload.
const HIDDEN_FROM_APP: &[&str] = &["MESH_JOIN_TOKEN", "MESH_ADMIN_TOKEN"];

#[derive(Debug, thiserror::Error)]
#[error("cannot start {command}: {source}")]
pub struct AppError {
    command: String,
    #[source]
    source: std::io::Error,
}

/// The running app; its whole process group is killed if dropped while running.
pub struct App {
    child: Child,
    /// Process group of the app (its own pid): signals reach the app's children too, e.g. the
    /// server a `sh -c` wrapper started.
    pgid: Pid,
    reaped: bool,
}

// === impl AppError ===

impl AppError {
    /// The shell's conventions: 127 command not found, 126 found but not executable.
    pub fn exit_code(&self) -> i32 {
        match self.source.kind() {
            std::io::ErrorKind::NotFound => 127,
            std::io::ErrorKind::PermissionDenied => 126,
            _ => 1,
        }
    }
}

// === impl App ===

impl App {
    /// Starts the app with the proxy environment.
    /// In interception mode (`netns`: the workload's namespace) it runs inside the namespace
    /// with no proxy settings at all: the rules bring its traffic to the sidecar.
    pub fn spawn(
        args: &RunArgs,
        sidecar: SidecarAddrs,
        netns: Option<&str>,
    ) -> Result<Self, AppError> {
        let Some((program, rest)) = args.command.split_first() else {
            return Err(AppError {
                command: String::new(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no command given"),
            });
        };
        let mut cmd = match netns {
            None => {
                let proxy = format!("http://{}", sidecar.outbound);
                let mut c = Command::new(program);
                c.env("HTTP_PROXY", &proxy)
                    .env("http_proxy", &proxy)
                    .env("NO_PROXY", NO_PROXY)
                    .env("no_proxy", NO_PROXY)
                    .env("MESH_SIDECAR_ADMIN", format!("http://{}", sidecar.admin));
                c
            }
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program).env(
                    "MESH_SIDECAR_ADMIN",
                    format!("http://127.0.0.1:{}", sidecar.admin.port()),
                );
                for k in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
                    c.env_remove(k);
                }
                c
            }
        };
        cmd.args(rest)
            .env("MESH_SERVICE", &args.service)
            // Its own group, so a stop reaches every process of the app and nothing is left
            // behind. The cost: an app reading the terminal would be a background job; workloads
            // are servers and jobs, not interactive programs.
            .process_group(0)
            .kill_on_drop(true);
        for k in HIDDEN_FROM_APP {
            cmd.env_remove(k);
        }
        super::orphan::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| AppError {
            command: program.to_string_lossy().into_owned(),
            source,
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        Ok(Self {
            child,
            pgid: Pid::from_raw(pid as i32),
            reaped: false,
        })
    }

    /// Sends `signo` to the app's process group.
    pub fn signal(&self, signo: i32) {
        if let Ok(sig) = Signal::try_from(signo) {
            let _ = killpg(self.pgid, sig);
        }
    }

    /// Waits for the app to exit, then kills whatever it left in its group.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.reap();
        status
    }

    /// Waits up to `grace` for the app to exit after a stop signal; a second stop signal or the
    /// end of the grace kills it.
    pub async fn wait_or_kill(
        &mut self,
        grace: Duration,
        stop: &mut StopSignals,
    ) -> std::io::Result<ExitStatus> {
        tokio::select! {
            status = self.child.wait() => {
                self.reap();
                return status;
            }
            () = tokio::time::sleep(grace) => {
                eprintln!("mesh-cli run: the app did not exit within {grace:?}: killing it");
            }
            _ = stop.next() => eprintln!("mesh-cli run: second stop signal: killing the app"),
        }
        self.signal(libc::SIGKILL);
        self.wait().await
    }

    fn reap(&mut self) {
        if !self.reaped {
            let _ = killpg(self.pgid, Signal::SIGKILL);
            self.reaped = true;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.reap();
    }
}

/// The process exit code for the app's status: its own code, 128+N for death by signal N
/// (the shell's convention), 1 if it could not be waited for.
pub fn exit_code(status: std::io::Result<ExitStatus>) -> i32 {
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(e) => {
            eprintln!("mesh-cli run: lost track of the app: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        // Raw wait statuses: exit code in the high byte, terminating signal in the low bits.
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(3 << 8))), 3);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(0))), 0);
        assert_eq!(exit_code(Ok(ExitStatus::from_raw(libc::SIGKILL))), 128 + 9);
        assert_eq!(exit_code(Err(std::io::Error::other("gone"))), 1);
    }
}
