//! A child process for the store's crash tests: it drives a RocksStore to a given point,
//! prints what it reached on stdout, then waits to be SIGKILLed by the test.
//!
//! `store-crash-helper prepare DIR TXN KEY VALUE`: stage `KEY = VALUE` in TXN and prepare it.
//! `store-crash-helper commit DIR TXN`: commit TXN (found prepared at open) — the durable batch
//!   is written, and the process dies before any acknowledgement could be sent.

use std::io::Write;
use std::path::PathBuf;

use ratify_participant::{Resource, RocksStore, StoreConfig, TxnContext};
use ratify_proto::types::{TxnId, Vote};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: store-crash-helper prepare DIR TXN KEY VALUE | commit DIR TXN";
    let (Some(cmd), Some(dir), Some(txn)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let txn: TxnId = txn.parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let store = RocksStore::open(&dir, StoreConfig::default()).unwrap_or_else(|e| {
        eprintln!("open: {e}");
        std::process::exit(1);
    });
    let reached = match cmd.as_str() {
        "prepare" => {
            let (Some(key), Some(value)) = (args.get(4), args.get(5)) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            let t = store.txn(&TxnContext::new(txn)).expect("begin");
            t.put(key.as_bytes(), value.as_bytes())
                .await
                .expect("stage");
            let vote = store.prepare(txn).await.expect("prepare");
            assert_eq!(vote, Vote::Yes);
            "prepared"
        }
        "commit" => {
            let status = store.commit(txn).await.expect("commit");
            println!("status {status:?}");
            "committed"
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    println!("{reached}");
    std::io::stdout().flush().expect("stdout");
    // Wait for the SIGKILL; never close the store cleanly.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
