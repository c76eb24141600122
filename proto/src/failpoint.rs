//! Crash points for tests and the fault-injection harness, shared by the coordinator and the
//! participant SDK.
//!
//! Compiled in only with the cargo feature `failpoints` (of this crate, enabled by the
//! coordinator's and the SDK's features of the same name). A process arms points with the
//! environment variable `RATIFY_FAILPOINTS`, a comma-separated list of names. When an armed
//! point is reached the process kills itself with SIGKILL: a real crash, nothing flushed.
//!
//! With `RATIFY_FAILPOINT_ONCE_DIR` set, each point fires once across every process sharing
//! that directory (the first to reach it creates a marker file there), so a test can crash
//! "the leader" without crashing the next leader at the same point.

/// Crash here if `name` is armed.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        std::env::var("RATIFY_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if !armed.iter().any(|a| a == name) {
        return;
    }
    if let Some(dir) = std::env::var_os("RATIFY_FAILPOINT_ONCE_DIR") {
        let marker = std::path::Path::new(&dir).join(name);
        let first = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .is_ok();
        if !first {
            return;
        }
    }
    eprintln!("failpoint {name} hit: crashing with SIGKILL");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; this is not reached.
    std::process::abort();
}

/// Without the `failpoints` feature, points cost nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
