//! Lines of a spawned process's stdout, readable with a bounded wait.

use std::io::{BufRead, BufReader};
use std::process::ChildStdout;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Result, bail};

/// Lines of a spawned process's stdout, read on a thread so waits can be bounded.
#[derive(Debug)]
pub struct Lines {
    pub pid: u32,
    rx: mpsc::Receiver<String>,
}

// === impl Lines ===

impl Lines {
    pub(super) fn new(pid: u32, stdout: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more: closing the pipe early would
            // make the child's next print fail (EPIPE) during teardown.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines { pid, rx }
    }

    /// The next line starting with `prefix` (the rest of it), skipping others; errors after
    /// `timeout` or when the process closes its stdout.
    pub fn expect(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(e) => bail!("no line starting with {prefix:?} ({e})"),
            }
        }
    }

    /// Every line received so far (non-blocking).
    pub fn drain(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }
}
