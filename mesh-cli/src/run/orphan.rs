//! Children that die with `run`: the kernel kills them if `run` itself is killed (SIGKILL, OOM).

use tokio::process::Command;

/// Asks the kernel to SIGKILL the child when the thread that spawned it exits. `run` spawns
/// from its only thread (a current-thread runtime on the main thread), so this means "when
/// `run` dies" — the one case `run`'s own cleanup cannot handle.
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // `run` died between fork and prctl: the signal will never come, so do not start.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("mesh-cli run exited"));
            }
            Ok(())
        });
    }
}
