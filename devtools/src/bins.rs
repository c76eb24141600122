//! The workspace's binaries, test directories and node logs: integration tests and tools run
//! the real `ratify` binary as child processes on loopback, so crashes are real (SIGKILL) and
//! storage is real (RocksDB directories reopened by a new process).

use std::path::PathBuf;

/// The `ratify` binary under test: `$RATIFY_BIN`, or the one cargo built beside this test
/// executable (`scripts/test` builds it before running the tests).
pub fn ratify_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RATIFY_BIN") {
        return PathBuf::from(p);
    }
    helper_bin("ratify")
}

/// The example bank branch binary (`ratify-bank`).
pub fn bank_bin() -> PathBuf {
    helper_bin("ratify-bank")
}

/// A workspace binary that cargo built beside this executable (a test in
/// `target/<profile>/deps/`, or a binary in `target/<profile>/`).
pub fn helper_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the executable has a path");
    let dir = exe.parent().expect("the executable is in a directory");
    let beside = dir.join(name);
    let bin = if beside.exists() {
        beside
    } else {
        dir.parent()
            .map(|profile| profile.join(name))
            .expect("test executables live in target/<profile>/deps")
    };
    assert!(
        bin.exists(),
        "{} not found: build the workspace's binaries first (`cargo build --bins --all-features`, as scripts/test does)",
        bin.display()
    );
    bin
}

/// A fresh directory for one test's nodes, removed when dropped (kept if the test panics
/// with `RATIFY_KEEP_TEST_DIRS=1`, for reading node logs).
pub fn test_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ratify-{name}-"))
        .tempdir()
        .expect("a temporary directory can be created");
    if std::env::var_os("RATIFY_KEEP_TEST_DIRS").is_some() {
        eprintln!("test dir: {}", dir.path().display());
    }
    dir
}

/// Dump the nodes' logs to stderr (shown when a test fails).
pub fn dump_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("----- {} (last {} lines)", log.display(), tail.len());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}
