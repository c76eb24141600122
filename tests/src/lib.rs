//! Support for Ratify's integration tests: they run the real `ratify` binary as child
//! processes on loopback, so crashes are real (SIGKILL) and storage is real (RocksDB
//! directories reopened by a new process).
//!
//! Each test file says which guarantee each test checks, citing the numbered rules of
//! docs/protocol.md.

use std::path::PathBuf;

/// The `ratify` binary under test: `$RATIFY_BIN`, or the one cargo built beside this test
/// executable (`scripts/test` builds it before running the tests).
pub fn ratify_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RATIFY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/ratify
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("ratify"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build --bins`, as scripts/test does) or set RATIFY_BIN",
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
