//! Where a process really dials an endpoint: a per-process address rewrite, for routing a
//! process's outgoing connections through a proxy (the fault-injection harness puts a proxy
//! on every network link) or through a local tunnel.
//!
//! The map comes from the environment variable `RATIFY_DIAL_MAP`, read once: a comma-separated
//! list of `FROM=TO` pairs of `host:port`, e.g. `127.0.0.1:7001=127.0.0.1:9001`. Every
//! connection this process opens to `FROM` (peers, participants, the leader named in a hint)
//! goes to `TO` instead; nothing else changes (the advertised addresses, the replicated
//! membership and registry keep `FROM`). A process embedding Ratify's client may set the map
//! in code with [`set`] before its first connection (or give the SDK's client its own map,
//! `ClientConfig::dial_map`). A process without a map connects directly.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The environment variable holding the map.
pub const ENV: &str = "RATIFY_DIAL_MAP";

static MAP: OnceLock<BTreeMap<String, String>> = OnceLock::new();

/// Parse `FROM=TO,FROM=TO`; the error names the bad pair.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, to) = pair
            .split_once('=')
            .ok_or_else(|| format!("{ENV}: {pair:?} is not FROM=TO (host:port=host:port)"))?;
        let (from, to) = (from.trim(), to.trim());
        for side in [from, to] {
            if side
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(format!("{ENV}: {side:?} in {pair:?} is not host:port"));
            }
        }
        map.insert(from.to_owned(), to.to_owned());
    }
    Ok(map)
}

/// Set this process's map (before its first connection). Returns false if a map was already
/// in force (set earlier, or read from the environment by a first use).
pub fn set(map: BTreeMap<String, String>) -> bool {
    MAP.set(map).is_ok()
}

fn map() -> &'static BTreeMap<String, String> {
    MAP.get_or_init(|| match std::env::var(ENV) {
        // Ratify's binaries check the map at start ([`init_from_env`]) and refuse to run with a
        // malformed one; a library user who did not is told here, and connects directly.
        Ok(text) => parse(&text).unwrap_or_else(|e| {
            eprintln!("{e}: ignoring the malformed dial map");
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    })
}

/// Check the environment's map now (at start-up), so a malformed one fails early.
pub fn init_from_env() -> Result<(), String> {
    if let Ok(text) = std::env::var(ENV) {
        let parsed = parse(&text)?;
        let _ = MAP.set(parsed);
    }
    Ok(())
}

/// The URL to connect to for `url` (`http://host:port[/...]`): rewritten if its `host:port`
/// is in the map, else unchanged.
pub fn target(url: &str) -> String {
    target_in(map(), url)
}

/// As [`target`], with an explicit map instead of the process's.
pub fn target_in(map: &BTreeMap<String, String>, url: &str) -> String {
    if map.is_empty() {
        return url.to_owned();
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match map.get(authority) {
        Some(to) if scheme.is_empty() => format!("{to}{path}"),
        Some(to) => format!("{scheme}://{to}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_names_bad_ones() {
        let m = parse("127.0.0.1:1=127.0.0.1:2, 127.0.0.1:3=127.0.0.1:4").expect("valid");
        assert_eq!(
            m.get("127.0.0.1:1").map(String::as_str),
            Some("127.0.0.1:2")
        );
        assert_eq!(m.len(), 2);
        assert!(parse("").expect("empty is valid").is_empty());
        assert!(
            parse("127.0.0.1:1")
                .expect_err("invalid")
                .contains("not FROM=TO")
        );
        assert!(
            parse("127.0.0.1:1=nohost")
                .expect_err("invalid")
                .contains("\"nohost\"")
        );
        assert!(parse("127.0.0.1:x=127.0.0.1:2").is_err());
    }

    #[test]
    fn rewrites_only_mapped_authorities() {
        set(parse("127.0.0.1:1=127.0.0.1:2").expect("valid"));
        assert_eq!(target("http://127.0.0.1:1"), "http://127.0.0.1:2");
        assert_eq!(target("http://127.0.0.1:1/x"), "http://127.0.0.1:2/x");
        assert_eq!(target("http://127.0.0.1:5"), "http://127.0.0.1:5");
    }
}
