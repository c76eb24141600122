//! `ratify coordinator` settings from three layers: flags, then `RATIFY_*` environment
//! variables (clap reads both), then an optional TOML file, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use ratify_coordinator::config::{NodeConfig, Peer};
use ratify_proto::types::Endpoint;
use serde::Deserialize;

use crate::CoordinatorArgs;

/// The TOML file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    data: Option<PathBuf>,
    peers: Option<Vec<String>>,
    init: Option<bool>,
    cluster_name: Option<String>,
    snapshot_every: Option<u64>,
    log_keep: Option<u64>,
    port_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
}

/// Given explicitly (flag or environment), as opposed to a clap default or absent.
fn explicit(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// The node's configuration and its port file, from flags, environment and file.
pub fn merge(args: CoordinatorArgs, m: &ArgMatches) -> Result<(NodeConfig, Option<PathBuf>)> {
    let file: FileConfig = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
        }
    };
    let pick = |id: &str, from_args: bool| explicit(m, id) || from_args;
    let node_id = match (args.node_id, file.id) {
        (Some(id), _) => id,
        (None, Some(id)) => id,
        (None, None) => {
            bail!("a node id is required: --id, RATIFY_NODE_ID or `id` in the config file")
        }
    };
    let data_dir = match (args.data_dir, file.data) {
        (Some(d), _) => d,
        (None, Some(d)) => d,
        (None, None) => {
            bail!("a data directory is required: --data, RATIFY_DATA or `data` in the config file")
        }
    };
    let listen = if pick("listen", false) {
        args.listen
    } else {
        file.listen.unwrap_or(args.listen)
    };
    let advertise = match (args.advertise, file.advertise) {
        (Some(a), _) => Some(a),
        (None, Some(a)) => Some(Endpoint::new(a).context("config file: advertise")?),
        (None, None) => None,
    };
    let peers = if !args.peers.is_empty() {
        args.peers
    } else {
        file.peers
            .unwrap_or_default()
            .iter()
            .map(|p| p.parse::<Peer>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()
            .context("config file: peers")?
    };
    let init = if pick("init", args.init) {
        args.init
    } else {
        file.init.unwrap_or(false)
    };
    let cluster_name = if pick("cluster_name", false) {
        args.cluster_name
    } else {
        file.cluster_name.unwrap_or(args.cluster_name)
    };
    let snapshot_every = if pick("snapshot_every", false) {
        args.snapshot_every
    } else {
        file.snapshot_every.unwrap_or(args.snapshot_every)
    };
    let log_keep = if pick("log_keep", false) {
        args.log_keep
    } else {
        file.log_keep.unwrap_or(args.log_keep)
    };
    let port_file = args.port_file.or(file.port_file);
    let metrics_listen = args.metrics_listen.or(file.metrics_listen);
    Ok((
        NodeConfig {
            node_id,
            listen,
            advertise,
            data_dir,
            peers,
            init,
            cluster_name,
            snapshot_every,
            log_keep,
            metrics_listen,
        },
        port_file,
    ))
}
