//! Fault-injecting TCP proxies: one per directed network link (who opens the connection →
//! to whom), so a fault can hit exactly one link.
//!
//! Faults on a link ([`Faults`]):
//! - `cut`: a partition. Open connections are closed at once (in-flight bytes are lost); new
//!   ones are accepted and then left hanging without an upstream (the dialer sees timeouts,
//!   like packets into a black hole) until the cut heals, when they are closed.
//! - `delay` + `jitter`: every chunk of bytes is delivered `delay + U(0, jitter)` after it
//!   was read, never before an earlier chunk of the same direction (TCP keeps order).
//! - `drop`: each chunk kills its connection with this probability (TCP cannot lose a message
//!   and carry on; a lost message means a broken connection and a retry).
//! - `hold`: connections open when the hold began stop delivering (bytes wait in the proxy and
//!   in the kernel's buffers) until it is lifted, then everything held arrives at once, late;
//!   connections opened during the hold flow normally, so newer messages overtake older ones.
//!
//! Every queue is bounded ([`QUEUE_CHUNKS`], [`BLACKHOLED_MAX`]); a proxy never buffers more
//! than a queue per direction per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::rng::Rng;

/// Bytes read at once from a socket.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued per direction of a connection (delays), at most; beyond, reading pauses.
pub const QUEUE_CHUNKS: usize = 256;
/// Connections left hanging on a cut link, at most; beyond, new ones are closed at once.
pub const BLACKHOLED_MAX: usize = 256;
/// How long the proxy tries to reach the upstream for a new connection.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The faults on one link.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Partitioned.
    pub cut: bool,
    /// Added latency per chunk.
    pub delay: Duration,
    /// Up to this much more, uniformly.
    pub jitter: Duration,
    /// Probability that a chunk breaks its connection.
    pub drop: f64,
    /// Deliveries on connections older than the hold wait.
    pub hold: bool,
}

impl Faults {
    /// Whether nothing is wrong.
    pub fn is_clear(&self) -> bool {
        *self == Faults::default()
    }
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    faults: Faults,
    /// Connections with an id below this wait while `faults.hold`.
    held_below: u64,
}

/// One directed link's proxy.
pub struct Link {
    from: String,
    to: String,
    listen: SocketAddr,
    upstream: SocketAddr,
    next_conn: Arc<AtomicU64>,
    state: watch::Sender<LinkState>,
    accept: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Link {
    /// Where the dialer connects.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its faults now.
    pub fn faults(&self) -> Faults {
        self.state.borrow().faults.clone()
    }

    fn set(&self, faults: Faults) {
        let next = self.next_conn.load(Ordering::SeqCst);
        self.state.send_modify(|s| {
            if faults.hold && !s.faults.hold {
                s.held_below = next;
            }
            s.faults = faults;
        });
    }
}

/// Every link's proxy, by `(from, to)`.
#[derive(Default)]
pub struct Net {
    links: Mutex<BTreeMap<(String, String), Arc<Link>>>,
    seed: AtomicU64,
}

impl Net {
    /// No links yet; `seed` drives drops and jitter.
    pub fn new(seed: u64) -> Self {
        Self {
            links: Mutex::new(BTreeMap::new()),
            seed: AtomicU64::new(seed),
        }
    }

    fn links(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start the proxy for `from → to` (forwarding to `upstream`) on a free loopback port.
    pub async fn add(
        &self,
        from: &str,
        to: &str,
        upstream: SocketAddr,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (state, _) = watch::channel(LinkState::default());
        let next_conn = Arc::new(AtomicU64::new(0));
        let seed = self.seed.fetch_add(1, Ordering::SeqCst);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            state.clone(),
            next_conn.clone(),
            Rng::new(seed),
        ));
        let link = Arc::new(Link {
            from: from.to_owned(),
            to: to.to_owned(),
            listen,
            upstream,
            next_conn,
            state,
            accept,
        });
        self.links().insert((from.to_owned(), to.to_owned()), link);
        Ok(listen)
    }

    /// The link `from → to`.
    pub fn link(&self, from: &str, to: &str) -> Option<Arc<Link>> {
        self.links().get(&(from.to_owned(), to.to_owned())).cloned()
    }

    /// Change the faults of every link `select(from, to)` picks; returns how many.
    pub fn update(
        &self,
        select: impl Fn(&str, &str) -> bool,
        change: impl Fn(&mut Faults),
    ) -> usize {
        let mut n = 0;
        for link in self.links().values() {
            if select(&link.from, &link.to) {
                let mut f = link.faults();
                change(&mut f);
                link.set(f);
                n += 1;
            }
        }
        n
    }

    /// Clear every fault.
    pub fn heal(&self) {
        self.update(|_, _| true, |f| *f = Faults::default());
    }

    /// `(from, to, upstream, listen)` of every link, for the run's record.
    pub fn describe(&self) -> Vec<(String, String, SocketAddr, SocketAddr)> {
        self.links()
            .values()
            .map(|l| (l.from.clone(), l.to.clone(), l.upstream, l.listen))
            .collect()
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Sender<LinkState>,
    next_conn: Arc<AtomicU64>,
    mut rng: Rng,
) {
    let blackholed = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((down, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = down.set_nodelay(true);
        let id = next_conn.fetch_add(1, Ordering::SeqCst);
        let rx = state.subscribe();
        if rx.borrow().faults.cut {
            if blackholed.load(Ordering::SeqCst) as usize >= BLACKHOLED_MAX {
                continue; // dropped: closed at once
            }
            blackholed.fetch_add(1, Ordering::SeqCst);
            let blackholed = blackholed.clone();
            tokio::spawn(async move {
                blackhole(down, rx).await;
                blackholed.fetch_sub(1, Ordering::SeqCst);
            });
            continue;
        }
        let rng = rng.fork(id);
        tokio::spawn(async move {
            let up =
                match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
                    .await
                {
                    Ok(Ok(up)) => up,
                    // The upstream is down (killed, not started): the dialer sees a closed
                    // connection, as it would from a dead host's refusal.
                    _ => return,
                };
            let _ = up.set_nodelay(true);
            relay(id, down, up, rx, rng).await;
        });
    }
}

/// Hold an accepted connection without an upstream until the cut heals, then close it.
async fn blackhole(down: TcpStream, mut rx: watch::Receiver<LinkState>) {
    while rx.borrow_and_update().faults.cut {
        if rx.changed().await.is_err() {
            break;
        }
    }
    drop(down);
}

/// Whether a relayed connection must close: every one does while its link is cut (relayed
/// connections are only made while the link is not cut, so all of them predate the cut).
fn killed(_id: u64, s: &LinkState) -> bool {
    s.faults.cut
}

/// Resolves when the connection must close: its link is cut, or the other direction ended.
async fn until_closed(
    id: u64,
    mut rx: watch::Receiver<LinkState>,
    mut done_rx: watch::Receiver<bool>,
) {
    loop {
        if killed(id, &rx.borrow_and_update()) || *done_rx.borrow_and_update() {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = done_rx.changed() => if r.is_err() { return },
        }
    }
}

fn held(id: u64, s: &LinkState) -> bool {
    s.faults.hold && id < s.held_below
}

async fn relay(
    id: u64,
    down: TcpStream,
    up: TcpStream,
    rx: watch::Receiver<LinkState>,
    mut rng: Rng,
) {
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    // Either direction ending ends the connection (Ratify's connections are long-lived HTTP/2).
    let (done_tx, done_rx) = watch::channel(false);
    let a = tokio::spawn(pump(
        id,
        down_r,
        up_w,
        rx.clone(),
        done_tx.clone(),
        done_rx.clone(),
        rng.fork(1),
    ));
    let b = tokio::spawn(pump(id, up_r, down_w, rx, done_tx, done_rx, rng.fork(2)));
    let _ = a.await;
    let _ = b.await;
}

async fn pump(
    id: u64,
    mut src: tokio::net::tcp::OwnedReadHalf,
    mut dst: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<LinkState>,
    done_tx: watch::Sender<bool>,
    mut done_rx: watch::Receiver<bool>,
    mut rng: Rng,
) {
    let (q_tx, mut q_rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let writer = {
        let mut rx = rx.clone();
        let mut done_rx = done_rx.clone();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            while let Some((at, bytes)) = q_rx.recv().await {
                tokio::time::sleep_until(at).await;
                loop {
                    let (is_held, is_killed) = {
                        let s = rx.borrow_and_update();
                        (held(id, &s), killed(id, &s))
                    };
                    if is_killed || *done_rx.borrow() {
                        let _ = done_tx.send(true);
                        return;
                    }
                    if !is_held {
                        break;
                    }
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return },
                        _ = done_rx.changed() => {}
                    }
                }
                // A receiver that does not read (a paused process) must not keep a cut or a
                // closed connection alive.
                let written = tokio::select! {
                    r = dst.write_all(&bytes) => r.is_ok(),
                    _ = until_closed(id, rx.clone(), done_rx.clone()) => false,
                };
                if !written {
                    let _ = done_tx.send(true);
                    return;
                }
            }
            let _ = dst.shutdown().await;
        })
    };
    let mut last_at = Instant::now();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = tokio::select! {
            r = src.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            r = rx.changed() => {
                if r.is_err() || killed(id, &rx.borrow_and_update()) {
                    break;
                }
                continue;
            }
            _ = done_rx.changed() => break,
        };
        let faults = rx.borrow().faults.clone();
        if killed(id, &rx.borrow()) {
            break;
        }
        if faults.drop > 0.0 && rng.chance(faults.drop) {
            break;
        }
        let jitter = if faults.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(rng.below(faults.jitter.as_micros() as u64 + 1))
        };
        let at = (Instant::now() + faults.delay + jitter).max(last_at);
        last_at = at;
        if q_tx.send((at, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    let _ = done_tx.send(true);
    drop(q_tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    /// Bytes pass a clear link; a cut closes open connections and black-holes new ones until
    /// it heals.
    #[tokio::test]
    async fn cut_closes_and_blackholes_until_healed() {
        let net = Net::new(1);
        let proxy = net.add("a", "b", echo_server().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy).await.expect("connect");
        assert_eq!(roundtrip(&mut s, b"hi").await.expect("echo"), b"hi");
        assert_eq!(net.update(|f, t| f == "a" && t == "b", |f| f.cut = true), 1);
        let r = tokio::time::timeout(Duration::from_secs(2), roundtrip(&mut s, b"x")).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "an open connection is closed by a cut: {r:?}"
        );
        let mut s2 = TcpStream::connect(proxy).await.expect("accepted while cut");
        let r = tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut s2, b"y")).await;
        assert!(r.is_err(), "a new connection hangs while cut");
        net.heal();
        let mut s3 = TcpStream::connect(proxy).await.expect("connect");
        assert_eq!(
            roundtrip(&mut s3, b"ok").await.expect("echo after heal"),
            b"ok"
        );
    }

    /// A delay holds every chunk back by at least the delay.
    #[tokio::test]
    async fn delay_delays() {
        let net = Net::new(2);
        let proxy = net.add("a", "b", echo_server().await).await.expect("proxy");
        net.update(|_, _| true, |f| f.delay = Duration::from_millis(100));
        let mut s = TcpStream::connect(proxy).await.expect("connect");
        let t = Instant::now();
        roundtrip(&mut s, b"slow").await.expect("echo");
        // Both directions are delayed.
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    /// A hold stops old connections until released, while new ones flow: the newer message
    /// arrives first.
    #[tokio::test]
    async fn hold_delivers_late_and_lets_new_connections_overtake() {
        let net = Net::new(3);
        let proxy = net.add("a", "b", echo_server().await).await.expect("proxy");
        let mut old = TcpStream::connect(proxy).await.expect("connect");
        assert_eq!(roundtrip(&mut old, b"1").await.expect("echo"), b"1");
        net.update(|_, _| true, |f| f.hold = true);
        let held = tokio::spawn(async move { roundtrip(&mut old, b"late").await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "held while the hold lasts");
        let mut new = TcpStream::connect(proxy).await.expect("connect");
        assert_eq!(
            roundtrip(&mut new, b"new").await.expect("new flows"),
            b"new"
        );
        net.update(|_, _| true, |f| f.hold = false);
        let got = tokio::time::timeout(Duration::from_secs(2), held)
            .await
            .expect("released");
        assert_eq!(got.expect("task").expect("echo"), b"late");
    }

    /// With drop probability 1 the first chunk breaks the connection.
    #[tokio::test]
    async fn drop_breaks_connections() {
        let net = Net::new(4);
        let proxy = net.add("a", "b", echo_server().await).await.expect("proxy");
        net.update(|_, _| true, |f| f.drop = 1.0);
        let mut s = TcpStream::connect(proxy).await.expect("connect");
        let r = tokio::time::timeout(Duration::from_secs(2), roundtrip(&mut s, b"x")).await;
        assert!(matches!(r, Ok(Err(_))), "{r:?}");
    }
}
