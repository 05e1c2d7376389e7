//! `vmdeck-console-bench`: the browser console's relay (issue 13; goals: at least 100 MB/s
//! through the proxy, under 1 ms added per round trip at the median, under 1 MB per open
//! console).
//!
//! The proxy under test is vmdeck's own `vmdeck::console::relay::relay`, behind a real
//! WebSocket upgrade (rocket_ws, configured with `relay::ws_config()`, as the console route does
//! it), in a Rocket server of its own: this program started again with `--proxy`, a separate
//! process, so that its memory can be read alone. The real route also needs a session, a
//! ticket and a libvirt VM; the bench route (`GET /bench/console/ws?port=`) skips those, connects
//! to the given loopback port with TCP_NODELAY (as vmdeck's direct TCP path does), sends the
//! same `{"ok":true,…}` preamble and calls the same `relay()` with a watcher that never ends
//! the console. The session checks every 2 s and the audit entries are therefore not measured.
//!
//! On the other side, in this (the parent) process: a scripted VNC server on 127.0.0.1 (RFB 3.8
//! handshake with security None, a 1024x768 ServerInit, then either raw FramebufferUpdates of
//! 3 MiB as fast as the reader takes them, or an echo of everything it reads), and a client
//! that does the RFB 3.8 handshake (version, security None, ClientInit) and then counts or
//! echoes: a real WebSocket client (tokio-tungstenite) through the proxy, and the same logic
//! over a raw TCP connection to the scripted server for the direct path.
//!
//! Measured: throughput (direct and through the proxy, interleaved rounds), round-trip
//! latency of an 8-byte KeyEvent echoed by the server (direct and proxied interleaved one by
//! one), the proxy process's resident memory per open console (N consoles idle, then all
//! streaming), and a micro-bench of the view-only filter (`ClientFilter::feed`) that a
//! viewer's upstream messages go through.
//!
//! Run: `cargo run --release -p vmdeck-bench --bin vmdeck-console-bench -- [--seconds 3]
//! [--rounds 2] [--round-trips 2000] [--consoles 200]`

use std::hint::black_box;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use vmdeck::console::relay::{self, End, Watch};
use vmdeck::console::rfb::ClientFilter;
use vmdeck::console::Mode;

#[derive(Parser)]
#[command(about = "Measure the browser console's relay against a direct VNC connection")]
struct Args {
    /// Seconds each throughput measurement lasts (each path, each round).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Throughput rounds (direct then proxied in each).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Round trips measured each way (interleaved one by one).
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Consoles open at once for the memory measurement.
    #[arg(long, default_value_t = 200)]
    consoles: usize,
    /// Internal: run as the proxy process (prints its port, serves until killed).
    #[arg(long, hide = true)]
    proxy: bool,
}

// ---------------------------------------------------------------------------------------------
// The proxy process: the relay behind a real WebSocket upgrade.

/// A watcher that never ends the console (the real one checks the session and role).
struct Never;

#[rocket::async_trait]
impl Watch for Never {
    async fn check(&self, _input: bool) -> Option<End> {
        None
    }
}

#[rocket::get("/bench/console/ws?<port>")]
fn bench_socket(ws: rocket_ws::WebSocket, port: u16) -> rocket_ws::Channel<'static> {
    ws.config(relay::ws_config()).channel(move |mut stream| {
        Box::pin(async move {
            let display = match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(io) => io,
                Err(e) => {
                    let fail = serde_json::json!({ "ok": false, "error": e.to_string() });
                    let _ = stream.send(rocket_ws::Message::Text(fail.to_string())).await;
                    return Ok(());
                }
            };
            let _ = display.set_nodelay(true);
            let hello = serde_json::json!({ "ok": true, "mode": Mode::Interactive }).to_string();
            if stream.send(rocket_ws::Message::Text(hello)).await.is_err() {
                return Ok(());
            }
            let day = Duration::from_secs(86_400);
            relay::relay(stream, Box::new(display), Mode::Interactive, day, &Never).await;
            Ok(())
        })
    })
}

async fn run_proxy() {
    use rocket::figment::Figment;
    let port = common::free_port();
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("address", "127.0.0.1"))
        .merge(("port", port))
        .merge(("log_level", "off"))
        .merge(("secret_key", common::secret_key()));
    let rocket = rocket::custom(figment).mount("/", rocket::routes![bench_socket]).ignite().await;
    let rocket = rocket.expect("ignite the proxy");
    tokio::spawn(rocket.launch());
    // Serving once the port accepts.
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    println!("port {port}");
    // Until the parent kills this process (or closes its stdin).
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while let Ok(n) = stdin.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// The proxy process, started by the parent.
struct Proxy {
    child: Child,
    port: u16,
}

impl Proxy {
    fn start() -> Proxy {
        let exe = std::env::current_exe().expect("this program's path");
        let mut child = Command::new(exe)
            .arg("--proxy")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the proxy process");
        let out = child.stdout.take().expect("proxy stdout");
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).expect("proxy's port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the proxy said {line:?}"));
        Proxy { child, port }
    }

    /// A field of the proxy's `/proc/<pid>/status` in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted VNC server.

const WIDTH: u16 = 1024;
const HEIGHT: u16 = 768;

/// One raw FramebufferUpdate of the whole 1024x768x32bpp screen (3 MiB + 16 bytes).
fn frame() -> &'static [u8] {
    static FRAME: OnceLock<Vec<u8>> = OnceLock::new();
    FRAME.get_or_init(|| {
        let mut f = vec![0u8, 0, 0, 1];
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&WIDTH.to_be_bytes());
        f.extend_from_slice(&HEIGHT.to_be_bytes());
        f.extend_from_slice(&0i32.to_be_bytes());
        let pixels = usize::from(WIDTH) * usize::from(HEIGHT) * 4;
        f.extend((0..pixels).map(|i| (i % 251) as u8));
        f
    })
}

#[derive(Clone, Copy)]
enum Script {
    /// FramebufferUpdates as fast as the reader takes them.
    Stream,
    /// Echoes what it reads.
    Echo,
    /// Waits until told, then streams.
    Hold,
}

/// Starts a scripted VNC server on a free loopback port; `go` releases the `Hold` ones.
async fn scripted_server(script: Script, go: watch::Receiver<bool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the VNC stand-in");
    let port = listener.local_addr().expect("its port").port();
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                let _ = serve_vnc(io, script, go).await;
            });
        }
    });
    port
}

async fn serve_vnc(
    mut io: TcpStream,
    script: Script,
    mut go: watch::Receiver<bool>,
) -> std::io::Result<()> {
    io.set_nodelay(true)?;
    io.write_all(b"RFB 003.008\n").await?;
    let mut version = [0u8; 12];
    io.read_exact(&mut version).await?;
    if &version != b"RFB 003.008\n" {
        return Err(std::io::Error::other("not RFB 3.8"));
    }
    io.write_all(&[1, 1]).await?; // one security type: None
    let mut byte = [0u8; 1];
    io.read_exact(&mut byte).await?;
    if byte[0] != 1 {
        return Err(std::io::Error::other("security type not None"));
    }
    io.write_all(&[0, 0, 0, 0]).await?; // SecurityResult: OK
    io.read_exact(&mut byte).await?; // ClientInit (the proxy forces shared = 1)
    let mut init = Vec::new();
    init.extend_from_slice(&WIDTH.to_be_bytes());
    init.extend_from_slice(&HEIGHT.to_be_bytes());
    // 32 bpp, depth 24, little endian, true colour, max 255 each, shifts 16, 8, 0, padding.
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&5u32.to_be_bytes());
    init.extend_from_slice(b"bench");
    io.write_all(&init).await?;
    match script {
        Script::Stream => loop {
            io.write_all(frame()).await?;
        },
        Script::Hold => {
            if go.wait_for(|g| *g).await.is_err() {
                return Ok(());
            }
            loop {
                io.write_all(frame()).await?;
            }
        }
        Script::Echo => {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = io.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                io.write_all(&buf[..n]).await?;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The client: the same logic over a WebSocket through the proxy or raw TCP to the server.

enum Io {
    Ws(Box<WebSocketStream<TcpStream>>),
    Tcp(TcpStream, Vec<u8>),
}

struct Client {
    io: Io,
    /// Bytes read and not yet taken.
    pending: Vec<u8>,
}

impl Client {
    /// Connects directly to the scripted server on `vnc`.
    async fn direct(vnc: u16) -> Client {
        let io = TcpStream::connect(("127.0.0.1", vnc)).await.expect("connect directly");
        io.set_nodelay(true).expect("nodelay");
        let mut c = Client { io: Io::Tcp(io, vec![0u8; relay::CHUNK]), pending: Vec::new() };
        c.handshake().await;
        c
    }

    /// Connects through the proxy on `proxy` to the scripted server on `vnc`.
    async fn proxied(proxy: u16, vnc: u16) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", proxy)).await.expect("connect to the proxy");
        tcp.set_nodelay(true).expect("nodelay");
        let url = format!("ws://127.0.0.1:{proxy}/bench/console/ws?port={vnc}");
        let (mut ws, _) =
            tokio_tungstenite::client_async(url, tcp).await.expect("WebSocket upgrade");
        match ws.next().await {
            Some(Ok(WsMessage::Text(t))) if t.contains("\"ok\":true") => {}
            other => panic!("the proxy's preamble: {other:?}"),
        }
        let mut c = Client { io: Io::Ws(Box::new(ws)), pending: Vec::new() };
        c.handshake().await;
        c
    }

    /// Reads more; the number of bytes, 0 at the end.
    async fn fill(&mut self) -> usize {
        match &mut self.io {
            Io::Tcp(io, buf) => {
                let n = io.read(buf).await.expect("read directly");
                self.pending.extend_from_slice(&buf[..n]);
                n
            }
            Io::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => {
                        self.pending.extend_from_slice(&b);
                        return b.len();
                    }
                    Some(Ok(WsMessage::Close(_))) | None => return 0,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => panic!("read through the proxy: {e}"),
                }
            },
        }
    }

    /// Reads and forgets; the number of bytes, 0 at the end (throughput: no copy kept).
    async fn drain(&mut self) -> usize {
        if !self.pending.is_empty() {
            return std::mem::take(&mut self.pending).len();
        }
        match &mut self.io {
            Io::Tcp(io, buf) => io.read(buf).await.unwrap_or(0),
            Io::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => return black_box(b).len(),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return 0,
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.pending.len() < n {
            assert!(self.fill().await > 0, "connection closed in the middle of a message");
        }
        let rest = self.pending.split_off(n);
        std::mem::replace(&mut self.pending, rest)
    }

    async fn send(&mut self, data: &[u8]) {
        match &mut self.io {
            Io::Tcp(io, _) => io.write_all(data).await.expect("write directly"),
            Io::Ws(ws) => {
                ws.send(WsMessage::Binary(data.to_vec())).await.expect("write through the proxy")
            }
        }
    }

    /// RFB 3.8 with security None, as noVNC does it (shared flag 0: the proxy sets it).
    async fn handshake(&mut self) {
        assert_eq!(self.read_exact(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let count = self.read_exact(1).await[0];
        let types = self.read_exact(usize::from(count)).await;
        assert!(types.contains(&1), "security None offered");
        self.send(&[1]).await;
        assert_eq!(self.read_exact(4).await, [0, 0, 0, 0], "SecurityResult OK");
        self.send(&[0]).await;
        let init = self.read_exact(24).await;
        let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
        self.read_exact(name_len as usize).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// Bytes per second read by one client for `secs` seconds (after 0.2 s of warm-up).
async fn throughput(mut c: Client, secs: u64) -> f64 {
    let warm = Instant::now() + Duration::from_millis(200);
    while Instant::now() < warm {
        c.drain().await;
    }
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut bytes = 0u64;
    while Instant::now() < end {
        let n = c.drain().await;
        assert!(n > 0, "the stream ended early");
        bytes += n as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

fn mb(bytes_per_sec: f64) -> f64 {
    bytes_per_sec / 1e6
}

/// Round trips of one 8-byte KeyEvent, direct and proxied one after the other; ms each.
async fn round_trips(direct: &mut Client, proxied: &mut Client, n: usize) -> (Vec<f64>, Vec<f64>) {
    let key = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
    let mut d = Vec::with_capacity(n);
    let mut p = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        for (c, out) in [(&mut *direct, &mut d), (&mut *proxied, &mut p)] {
            let t = Instant::now();
            c.send(&key).await;
            let back = c.read_exact(key.len()).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(back, key);
            // The first tenth warms up.
            if i >= n / 10 {
                out.push(ms);
            }
        }
    }
    (d, p)
}

/// Opens `n` consoles through the proxy to a `Hold` server; each reads whatever comes.
async fn open_consoles(
    proxy: u16,
    vnc: u16,
    n: usize,
    read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = Client::proxied(proxy, vnc).await;
        let (read, stop) = (read.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = c.drain().await;
                if got == 0 {
                    break;
                }
                read.fetch_add(got as u64, Ordering::Relaxed);
            }
        }));
    }
    tasks
}

/// The view-only filter's cost: messages per second through `ClientFilter::feed`.
fn filter_micro_bench(secs: f64) {
    let handshake = [b"RFB 003.008\n".as_slice(), &[1], &[0]].concat();
    let fbur = [3u8, 1, 0, 0, 0, 0, 4, 0, 3, 0];
    let key_down = [4u8, 1, 0, 0, 0, 0, 0, 0x61];
    let key_up = [4u8, 0, 0, 0, 0, 0, 0, 0x61];
    let fresh = |mode| {
        let mut f = ClientFilter::new(mode);
        let mut out = Vec::new();
        f.feed(&handshake, &mut out).expect("handshake passes");
        f
    };
    // noVNC sends each message as a WebSocket message of its own: one feed per message.
    let mut f = fresh(Mode::ViewOnly);
    let mut out = Vec::with_capacity(64);
    let msgs: [&[u8]; 3] = [&fbur, &key_down, &key_up];
    let (mut n, start) = (0u64, Instant::now());
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..10_000 {
            out.clear();
            f.feed(black_box(msgs[(n % 3) as usize]), &mut out).expect("valid message");
            black_box(&out);
            n += 1;
        }
    }
    let per_msg = start.elapsed().as_secs_f64() / n as f64;
    println!(
        "view-only filter, one message per feed (FramebufferUpdateRequest, KeyEvent down, up): \
         {:.1} M messages/s, {:.0} ns each, {} dropped",
        1e-6 / per_msg,
        per_msg * 1e9,
        f.dropped()
    );
    // A batch of the same messages in one 64 KiB read.
    let mut batch = Vec::with_capacity(relay::CHUNK);
    let mut in_batch = 0u64;
    while batch.len() + 26 <= relay::CHUNK {
        batch.extend_from_slice(&fbur);
        batch.extend_from_slice(&key_down);
        batch.extend_from_slice(&key_up);
        in_batch += 3;
    }
    for (label, mode) in
        [("view-only (parsed)", Mode::ViewOnly), ("interactive (raw)", Mode::Interactive)]
    {
        let mut f = fresh(mode);
        let mut out = Vec::with_capacity(relay::CHUNK);
        let (mut bytes, mut rounds, start) = (0u64, 0u64, Instant::now());
        while start.elapsed().as_secs_f64() < secs {
            for _ in 0..100 {
                out.clear();
                f.feed(black_box(&batch), &mut out).expect("valid batch");
                black_box(&out);
                bytes += batch.len() as u64;
                rounds += 1;
            }
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{label} filter, 64 KiB batches of the same messages: {:.0} MB/s, {:.1} M messages/s",
            bytes as f64 / s / 1e6,
            (rounds * in_batch) as f64 / s / 1e6
        );
    }
}

/// The kernel's memory for TCP buffers, every socket on the machine (`/proc/net/sockstat`'s
/// `TCP: … mem N`, in pages).
fn tcp_kernel_mib() -> f64 {
    std::fs::read_to_string("/proc/net/sockstat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("TCP:"))?.to_string();
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "mem")?;
            words.get(at + 1)?.parse::<f64>().ok()
        })
        .map(|pages| pages * 4096.0 / (1 << 20) as f64)
        .unwrap_or(0.0)
}

/// `/proc/loadavg`'s first three figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[rocket::main]
async fn main() {
    let args = Args::parse();
    if args.proxy {
        return run_proxy().await;
    }
    println!(
        "vmdeck-console-bench: throughput {} s x {} rounds each way, {} round trips each way, \
         {} consoles for memory",
        args.seconds, args.rounds, args.round_trips, args.consoles
    );
    println!(
        "machine: {} cores, {}; load average at the start: {}",
        common::num_cpus(),
        common::cpu_model(),
        load_average()
    );
    println!(
        "proxy: vmdeck::console::relay::relay behind a rocket_ws upgrade with relay::ws_config(), \
         in a process of its own, on a bench-only route (no session, ticket, libvirt or audit; \
         a watcher that never ends the console); VNC side: a scripted RFB 3.8 server on \
         127.0.0.1 (TCP); client: tokio-tungstenite through the proxy, raw TCP direct"
    );
    let (go_tx, go_rx) = watch::channel(false);
    let stream_port = scripted_server(Script::Stream, go_rx.clone()).await;
    let echo_port = scripted_server(Script::Echo, go_rx.clone()).await;
    let hold_port = scripted_server(Script::Hold, go_rx).await;

    // Throughput.
    let proxy = Proxy::start();
    println!(
        "\n## Throughput, VNC server to client (3 MiB raw FramebufferUpdates, 64 KiB relay chunks)"
    );
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let d = throughput(Client::direct(stream_port).await, args.seconds).await;
        let p = throughput(Client::proxied(proxy.port, stream_port).await, args.seconds).await;
        println!(
            "round {round}: direct TCP {:.0} MB/s, through the proxy {:.0} MB/s ({:.0} %)",
            mb(d),
            mb(p),
            p / d * 100.0
        );
        direct.push(d);
        proxied.push(p);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "mean: direct TCP {:.0} MB/s, through the proxy {:.0} MB/s (goal >= 100 MB/s)",
        mb(mean(&direct)),
        mb(mean(&proxied))
    );

    // Latency.
    println!(
        "\n## Round trip of an 8-byte KeyEvent echoed by the VNC side ({} each way, interleaved)",
        args.round_trips
    );
    let mut d = Client::direct(echo_port).await;
    let mut p = Client::proxied(proxy.port, echo_port).await;
    let (d_ms, p_ms) = round_trips(&mut d, &mut p, args.round_trips).await;
    let (d_med, d_p99, d_max) = common::stats(d_ms);
    let (p_med, p_p99, p_max) = common::stats(p_ms);
    println!("direct TCP       : median {d_med:.3} ms, p99 {d_p99:.3} ms, max {d_max:.3} ms");
    println!("through the proxy: median {p_med:.3} ms, p99 {p_p99:.3} ms, max {p_max:.3} ms");
    println!(
        "added by the proxy: median {:.3} ms (goal < 1 ms), p99 {:.3} ms",
        p_med - d_med,
        p_p99 - d_p99
    );
    drop((d, p));
    drop(proxy);

    // Memory, in a fresh proxy process.
    let proxy = Proxy::start();
    let n = args.consoles;
    println!("\n## Memory of the proxy process per open console ({n} consoles)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = proxy.status_kib("VmRSS");
    let read = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = open_consoles(proxy.port, hold_port, n, read.clone(), stop.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = proxy.status_kib("VmRSS");
    let _ = go_tx.send(true);
    let streamed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streaming = proxy.status_kib("VmRSS");
    let peak = proxy.status_kib("VmHWM");
    let kernel = tcp_kernel_mib();
    let moved = read.load(Ordering::Relaxed) as f64 / streamed.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let per = |kib: u64| kib.saturating_sub(base) as f64 / n as f64;
    println!("proxy process before: {:.1} MiB resident", base as f64 / 1024.0);
    println!(
        "{n} consoles idle (after the handshake): {:.1} MiB, {:.1} KiB per console (goal < 1 MB)",
        idle as f64 / 1024.0,
        per(idle)
    );
    println!(
        "{n} consoles all streaming ({:.0} MB/s in all): {:.1} MiB, {:.1} KiB per console; \
         peak {:.1} MiB, {:.1} KiB per console",
        mb(moved),
        streaming as f64 / 1024.0,
        per(streaming),
        peak as f64 / 1024.0,
        per(peak)
    );
    println!(
        "not in these figures: the kernel's TCP buffers, {kernel:.0} MiB in all while streaming \
         (/proc/net/sockstat, every socket on the machine, both hops and both ends)"
    );
    for t in tasks {
        t.abort();
    }
    drop(proxy);

    println!("\n## View-only upstream: ClientFilter::feed (micro-bench, this process, one core)");
    filter_micro_bench(1.0);
    println!("\nload average at the end: {}", load_average());
}
