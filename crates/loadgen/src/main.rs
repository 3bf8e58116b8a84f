//! Connect-path load generator: full signed handshakes (open → challenge → signed connect → hello-ok →
//! close) against any OpenClaw-compatible gateway on loopback, from pre-paired device identities.
//!
//! Modes:
//! - `handshakes` (default): C workers, each handshaking back to back (closed loop).
//! - `rate`: handshakes started at a fixed `--rate` per second (open loop); latency counts from the
//!   scheduled start, so queueing is not hidden.
//! - `approvals` (pairgate only; the server must trust 127.0.0.1 as a proxy): `--count` remote-looking
//!   devices ask to pair, then C workers approve the requests through the REST API; every reply is sent
//!   only after its commit.
//! - `idle`: `--count` sockets, each after a full handshake, held open for `--hold-seconds` (ticks
//!   arrive meanwhile); reports the server's RSS with them all open and its CPU use while they idle.
//! - `cold-start`: runs `--spawn` (a shell command starting the gateway) `--runs` times and measures
//!   process spawn → first `hello-ok` (a signed connect with the gateway token), then stops it.
//! - `seed` (pairgate only): adds `--count` paired devices, one token each, to the database `--db`
//!   through the store's import API, 10,000 per transaction (the store-size scenario).
//! - `rpc`: C sessions, each after one handshake, calling `health` back to back until `--count` calls in
//!   all; latency per call (the front door's relay against the gateway itself).
//! - `echo`: the bare-WebSocket baseline: C workers each open a socket, send one frame, read it back and
//!   close, back to back, against `pairgate-ws-baseline` (no handshake, no gateway).
//! - `revocation` (pairgate only): `--devices` devices each pair and keep a socket open (on `--url`, with
//!   its device token), then one after another each device's operator token is revoked through the REST
//!   API of `--revoke-url` (another node of a fleet, or the same one); latency from the moment the REST
//!   reply arrives until the device's socket receives its close frame (4001). Negative when the socket
//!   closed before the reply arrived (a node closes its own sockets before it answers).
//!
//! `--url` may be given more than once (a fleet): connections go round-robin over the URLs (handshake,
//! request, socket or worker `n` to URL `n mod k`), devices are paired the same way. One `--url` behaves
//! as it always did. `--server-pid` may be given more than once too: `serverRssKiB` is the first's, as
//! before; `servers` has RSS and CPU seconds of each, over the measured phase. `--db-pid` (PostgreSQL's
//! postmaster) adds `dbCpuSeconds`: CPU of the database server and all its backends over that phase.
//!
//! A reconnect storm is `--mode rate --rate 1000000 --count N`: every handshake started at once; the
//! errors say how many were refused, and `latencyMs.max` when the last one was served.
//!
//!   pairgate-loadgen --url ws://127.0.0.1:18789/ --token T --devices 64 --concurrency 16 --count 20000

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use pairgate::client::{ConnectSpec, DeviceIdentity};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Measures signed WebSocket handshakes per second against a gateway on loopback")]
struct Args {
    /// Gateway WebSocket URL; loopback only. Repeat it for a fleet: connections go round-robin.
    #[arg(long = "url", default_value = "ws://127.0.0.1:18789/")]
    url: Vec<String>,
    /// For `--mode revocation`: the HTTP base URL of the node whose REST API revokes the tokens
    /// (e.g. http://127.0.0.1:18962). [default: the first --url, as http://]
    #[arg(long)]
    revoke_url: Option<String>,
    /// Gateway token (used to pair the identities, and by `--auth token`).
    #[arg(long, env = "PAIRGATE_TOKEN", hide_env_values = true)]
    token: String,
    /// Device identities to pair first and cycle through.
    #[arg(long, default_value_t = 64)]
    devices: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Handshakes to make in all.
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Hard time cap, seconds.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// handshakes, rate or approvals (see the top of this file).
    #[arg(long, value_parser = ["handshakes", "rate", "approvals", "idle", "cold-start", "seed", "rpc", "echo", "revocation"], default_value = "handshakes")]
    mode: String,
    /// How long `--mode idle` holds its sockets open, seconds.
    #[arg(long, default_value_t = 35)]
    hold_seconds: u64,
    /// The command `--mode cold-start` runs (through `sh -c`) to start the gateway at `--url`.
    #[arg(long)]
    spawn: Option<String>,
    /// How many cold starts to measure.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The pairgate database `--mode seed` adds devices to.
    #[arg(long)]
    db: Option<std::path::PathBuf>,
    /// Handshakes started per second, for `--mode rate`.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How measured handshakes authenticate: with each device's token, or the gateway token.
    #[arg(long, value_parser = ["device-token", "token"], default_value = "device-token")]
    auth: String,
    /// Server process to read RSS from (/proc/PID/status) before and after. Repeatable (one per node of
    /// a fleet): `serverRssKiB` and the idle figures are the first's; `servers` lists each one's RSS and
    /// CPU seconds over the measured phase.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The database server's main process (PostgreSQL's postmaster): the CPU seconds of it and of its
    /// backends over the measured phase are reported as `dbCpuSeconds`.
    #[arg(long)]
    db_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// The URL of connection (handshake, socket, worker) `n`: round-robin over `--url`.
    fn url_for(&self, n: usize) -> &str {
        &self.url[n % self.url.len()]
    }

    /// The first `--server-pid`, the one RSS figures are read from.
    fn first_pid(&self) -> Option<u32> {
        self.server_pid.first().copied()
    }

    /// `--url` as reported: the URL when one, the list when several.
    fn url_json(&self) -> Value {
        match self.url.as_slice() {
            [one] => json!(one),
            several => json!(several),
        }
    }
}

/// `ws://host:port/` → `http://host:port`.
fn http_base(url: &str) -> String {
    url.replacen("ws://", "http://", 1).trim_end_matches('/').to_owned()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        match ws.next().await.context("socket closed")?? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str())?;
                if value["event"] != "tick" {
                    return Ok(value);
                }
            }
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

fn now_ms() -> i64 {
    use pairgate::clock::Clock;
    pairgate::clock::SystemClock.now_ms()
}

/// Opens a socket (to a URL, or a request with extra headers) and answers its challenge with a signed
/// `connect`: the socket, still open, and the reply.
async fn connect_session<R>(request: R, spec: &ConnectSpec, identity: &DeviceIdentity) -> Result<(Ws, Value), String>
where
    R: tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
{
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("connect: {e}"))?;
    let challenge = next_json(&mut ws).await.map_err(|e| e.to_string())?;
    let nonce = challenge["payload"]["nonce"].as_str().ok_or("no challenge nonce")?.to_owned();
    let signed_at = challenge["payload"]["ts"].as_i64().unwrap_or_else(now_ms);
    let frame = spec.request("1", Some(identity), &nonce, signed_at);
    ws.send(Message::text(frame.to_string())).await.map_err(|e| e.to_string())?;
    let reply = next_json(&mut ws).await.map_err(|e| e.to_string())?;
    Ok((ws, reply))
}

/// A refused connect's code: `details.code` when given, else the error code.
fn refusal_code(reply: &Value) -> String {
    reply["error"]["details"]["code"].as_str().or(reply["error"]["code"].as_str()).unwrap_or("?").to_owned()
}

/// One full handshake; the hello-ok payload, or the error code.
async fn handshake(url: &str, spec: &ConnectSpec, identity: &DeviceIdentity) -> Result<Value, String> {
    let (mut ws, reply) = connect_session(url, spec, identity).await?;
    let _ = ws.close(None).await;
    if reply["ok"] == true { Ok(reply["payload"].clone()) } else { Err(refusal_code(&reply)) }
}

/// A handshake that keeps the socket.
async fn open_session(url: &str, spec: &ConnectSpec, identity: &DeviceIdentity) -> Result<Ws, String> {
    let (ws, reply) = connect_session(url, spec, identity).await?;
    if reply["ok"] == true { Ok(ws) } else { Err(refusal_code(&reply)) }
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// Latencies (µs) and errors into the report.
fn report(
    args: &Args,
    mut latencies: Vec<u64>,
    errors: BTreeMap<String, u64>,
    elapsed: f64,
    rss_before: Option<u64>,
) -> Value {
    latencies.sort_unstable();
    json!({
        "url": args.url_json(),
        "mode": args.mode,
        "devices": args.devices,
        "concurrency": args.concurrency,
        "rate": (args.mode == "rate").then_some(args.rate),
        "auth": args.auth,
        "completed": latencies.len(),
        "handshakes": latencies.len(),
        "errors": errors,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "perSecond": (latencies.len() as f64 / elapsed).round(),
        "handshakesPerSecond": (latencies.len() as f64 / elapsed).round(),
        "latencyMs": {
            "p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0), "p99.9": percentile(&latencies, 99.9),
            "max": percentile(&latencies, 100.0),
        },
        "serverRssKiB": { "before": rss_before, "after": rss_kib(args.first_pid()) },
    })
}

type Outcome = (Vec<u64>, BTreeMap<String, u64>);

fn merge(into: &mut Outcome, (latencies, errors): Outcome) {
    into.0.extend(latencies);
    for (code, n) in errors {
        *into.1.entry(code).or_default() += n;
    }
}

/// Pairs `n` identities through the public protocol (a local connect with the gateway token).
async fn pair_devices(args: &Args) -> anyhow::Result<Vec<(DeviceIdentity, ConnectSpec)>> {
    let pairing = ConnectSpec::operator(&["operator.read"], Some(&args.token));
    let mut devices = Vec::with_capacity(args.devices);
    for n in 0..args.devices {
        let identity = DeviceIdentity::generate();
        let hello = handshake(args.url_for(n), &pairing, &identity)
            .await
            .map_err(|code| anyhow::anyhow!("pairing failed: {code}"))?;
        let token = hello["auth"]["deviceToken"].as_str().map(str::to_owned);
        let mut spec = pairing.clone();
        if args.auth == "device-token" {
            spec.token = None;
            spec.device_token = Some(token.context("the gateway issued no device token")?);
        }
        devices.push((identity, spec));
    }
    Ok(devices)
}

/// C workers, each running `op(n)` for the next `n` back to back until `count` in all or the deadline;
/// the latency of each success, and the errors by text.
async fn back_to_back<F, Fut>(concurrency: usize, count: u64, deadline: Instant, op: F) -> anyhow::Result<Outcome>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let issued = Arc::new(AtomicU64::new(0));
    let workers = (0..concurrency).map(|_| {
        let (issued, op) = (issued.clone(), op.clone());
        tokio::spawn(async move {
            let mut outcome: Outcome = Default::default();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match op(n).await {
                    Ok(()) => outcome.0.push(t0.elapsed().as_micros() as u64),
                    Err(code) => *outcome.1.entry(code).or_default() += 1,
                }
            }
            outcome
        })
    });
    merged(workers.collect()).await
}

/// The outcomes of workers, together.
async fn merged(workers: Vec<tokio::task::JoinHandle<Outcome>>) -> anyhow::Result<Outcome> {
    let mut all = Outcome::default();
    for worker in workers {
        merge(&mut all, worker.await?);
    }
    Ok(all)
}

/// C workers handshaking back to back.
async fn closed_loop(
    args: &Args,
    devices: Arc<Vec<(DeviceIdentity, ConnectSpec)>>,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let urls = Arc::new(args.url.clone());
    back_to_back(args.concurrency, args.count, deadline, move |n| {
        let (devices, urls) = (devices.clone(), urls.clone());
        async move {
            let (identity, spec) = &devices[n as usize % devices.len()];
            handshake(&urls[n as usize % urls.len()], spec, identity).await.map(|_| ())
        }
    })
    .await
}

/// C sessions calling `health` back to back; latency per call.
async fn rpc_calls(
    args: &Args,
    devices: Arc<Vec<(DeviceIdentity, ConnectSpec)>>,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (identity, spec) = &devices[worker % devices.len()];
        let mut ws = open_session(args.url_for(worker), spec, identity)
            .await
            .map_err(|code| anyhow::anyhow!("session: {code}"))?;
        let (issued, count) = (issued.clone(), args.count);
        workers.push(tokio::spawn(async move {
            let mut outcome: Outcome = Default::default();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break;
                }
                let id = format!("h{n}");
                let t0 = Instant::now();
                let request = json!({ "type": "req", "id": id, "method": "health", "params": {} });
                if ws.send(Message::text(request.to_string())).await.is_err() {
                    *outcome.1.entry("send failed".into()).or_default() += 1;
                    break;
                }
                // Events the gateway pushes meanwhile (health, presence) are skipped.
                let reply = loop {
                    match next_json(&mut ws).await {
                        Ok(frame) if frame["type"] == "res" && frame["id"] == id.as_str() => break Ok(frame),
                        Ok(_) => continue,
                        Err(error) => break Err(error.to_string()),
                    }
                };
                match reply {
                    Ok(frame) if frame["ok"] == true => outcome.0.push(t0.elapsed().as_micros() as u64),
                    Ok(frame) => *outcome.1.entry(refusal_code(&frame)).or_default() += 1,
                    Err(error) => {
                        *outcome.1.entry(error).or_default() += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            outcome
        }));
    }
    merged(workers).await
}

/// The bare-WebSocket baseline: open, one frame there and back, close; C workers back to back.
async fn echoes(args: &Args, deadline: Instant) -> anyhow::Result<Outcome> {
    let urls = Arc::new(args.url.clone());
    back_to_back(args.concurrency, args.count, deadline, move |n| {
        let url = urls[n as usize % urls.len()].clone();
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.map_err(|e| e.to_string())?;
            ws.send(Message::text("ping")).await.map_err(|e| e.to_string())?;
            match ws.next().await {
                Some(Ok(Message::Text(_))) => {}
                other => return Err(format!("no echo: {other:?}")),
            }
            let _ = ws.close(None).await;
            Ok(())
        }
    })
    .await
}

/// Handshakes started on a fixed schedule; latency from the scheduled start.
async fn fixed_rate(
    args: &Args,
    devices: Arc<Vec<(DeviceIdentity, ConnectSpec)>>,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.count {
        let scheduled = start + interval * n as u32;
        if scheduled.into_std() >= deadline {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let (devices, url) = (devices.clone(), args.url_for(n as usize).to_owned());
        tasks.spawn(async move {
            let (identity, spec) = &devices[n as usize % devices.len()];
            handshake(&url, spec, identity).await.map(|_| scheduled.elapsed().as_micros() as u64)
        });
    }
    let mut all = Outcome::default();
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(latency) => all.0.push(latency),
            Err(code) => *all.1.entry(code).or_default() += 1,
        }
    }
    Ok(all)
}

/// `count` pairing requests from remote-looking devices, then C workers approve them over REST.
async fn approvals(args: &Args) -> anyhow::Result<(Outcome, f64, CpuMarks)> {
    let ask = ConnectSpec::operator(&["operator.read"], Some(&args.token));
    let mut request_ids = Vec::with_capacity(args.count as usize);
    for n in 0..args.count {
        let identity = DeviceIdentity::generate();
        let forwarded = format!("198.18.{}.{}", (n / 250) % 250, n % 250 + 1);
        match handshake_via_proxy(args.url_for(n as usize), &ask, &identity, &forwarded).await {
            Err(PairingAsk::Requested(id)) => request_ids.push(id),
            Err(PairingAsk::Other(code)) => {
                bail!("expected a pairing request, got {code} (start pairgate with --trusted-proxy 127.0.0.1)")
            }
            Ok(_) => bail!("the device was let in without pairing: is 127.0.0.1 a trusted proxy on the server?"),
        }
    }
    let queue = Arc::new(std::sync::Mutex::new(request_ids));
    let http = reqwest::Client::new();
    let marks = CpuMarks::take(args);
    let started = Instant::now();
    let mut workers = Vec::new();
    // Worker `w` approves through URL `w mod k`: a request asked on one node may be approved on another.
    for worker in 0..args.concurrency {
        let base = http_base(args.url_for(worker));
        let (queue, http, token) = (queue.clone(), http.clone(), args.token.clone());
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let Some(id) = queue.lock().expect("queue").pop() else { break };
                let t0 = Instant::now();
                let response =
                    http.post(format!("{base}/api/v1/requests/{id}/approve")).bearer_auth(&token).send().await;
                match response.map(|r| r.status()) {
                    Ok(status) if status.is_success() => outcome.0.push(t0.elapsed().as_micros() as u64),
                    Ok(status) => *outcome.1.entry(status.to_string()).or_default() += 1,
                    Err(error) => *outcome.1.entry(error.to_string()).or_default() += 1,
                }
            }
            outcome
        }));
    }
    Ok((merged(workers).await?, started.elapsed().as_secs_f64(), marks))
}

/// The server's CPU time (user + system) in seconds, from /proc/PID/stat (in clock ticks of 1/100 s,
/// the value on Linux x86_64 and arm64).
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU ticks of a process and of its children it has reaped (utime, stime, cutime, cstime), and its
/// parent's pid.
fn stat_ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = (11..=14).map(|i| fields.get(i)?.parse::<u64>().ok()).sum::<Option<u64>>()?;
    Some((ticks, fields.get(1)?.parse().ok()?))
}

/// CPU seconds of a server made of a main process and its children (PostgreSQL: the postmaster and its
/// backends): its own, its reaped children's, and each live child's. A backend that exits between two
/// readings moves from the live children into the reaped ones, so differences stay right.
fn tree_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let pid = pid?;
    let mut ticks = stat_ticks(pid)?.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        if let Some((child_ticks, parent)) = stat_ticks(child)
            && parent == pid
        {
            ticks += child_ticks;
        }
    }
    Some(ticks as f64 / 100.0)
}

/// The whole machine's busy CPU seconds, all cores (/proc/stat: user, nice, system, irq, softirq, steal).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
    Some([0, 1, 2, 5, 6, 7].iter().map(|&i| fields.get(i).copied().unwrap_or(0)).sum::<u64>() as f64 / 100.0)
}

/// CPU readings at the start of a measured phase: each `--server-pid`, `--db-pid`, this process, and the
/// machine (what none of them used was used by something else on the machine: a disturbed run).
struct CpuMarks {
    servers: Vec<Option<f64>>,
    db: Option<f64>,
    own: Option<f64>,
    machine: Option<f64>,
}

impl CpuMarks {
    fn take(args: &Args) -> CpuMarks {
        CpuMarks {
            servers: args.server_pid.iter().map(|pid| cpu_seconds(Some(*pid))).collect(),
            db: tree_cpu_seconds(args.db_pid),
            own: cpu_seconds(Some(std::process::id())),
            machine: machine_busy_seconds(),
        }
    }

    /// CPU seconds used since the marks: `servers` (with each one's RSS before and now), `dbCpuSeconds`,
    /// `loadgenCpuSeconds`, `machineCpuSeconds` (busy, all cores).
    fn used(&self, args: &Args, rss_before: &[Option<u64>], report: &mut Value) {
        let since =
            |start: Option<f64>, end: Option<f64>| end.zip(start).map(|(e, s)| ((e - s) * 100.0).round() / 100.0);
        let servers: Vec<Value> = args
            .server_pid
            .iter()
            .zip(&self.servers)
            .zip(rss_before)
            .map(|((pid, start), rss)| {
                json!({
                    "pid": pid,
                    "cpuSeconds": since(*start, cpu_seconds(Some(*pid))),
                    "rssKiB": { "before": rss, "after": rss_kib(Some(*pid)) },
                })
            })
            .collect();
        report["servers"] = json!(servers);
        report["dbCpuSeconds"] = json!(since(self.db, tree_cpu_seconds(args.db_pid)));
        report["loadgenCpuSeconds"] = json!(since(self.own, cpu_seconds(Some(std::process::id()))));
        report["machineCpuSeconds"] = json!(since(self.machine, machine_busy_seconds()));
    }
}

/// `count` sockets held open after their handshakes; the server's RSS and CPU while they idle.
async fn idle_sockets(args: &Args, deadline: Instant) -> anyhow::Result<Value> {
    let devices = Arc::new(pair_devices(args).await?);
    let rss_before = rss_kib(args.first_pid());
    let release = tokio_util::sync::CancellationToken::new();
    let ticks = Arc::new(AtomicU64::new(0));
    let opened = Arc::new(AtomicU64::new(0));
    let mut holders = tokio::task::JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    for n in 0..args.count {
        if Instant::now() >= deadline {
            break;
        }
        let permit = permits.clone().acquire_owned().await?;
        let (devices, url, release, ticks, opened) =
            (devices.clone(), args.url_for(n as usize).to_owned(), release.clone(), ticks.clone(), opened.clone());
        holders.spawn(async move {
            let (identity, spec) = &devices[n as usize % devices.len()];
            let mut ws = open_session(&url, spec, identity).await?;
            opened.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            loop {
                tokio::select! {
                    _ = release.cancelled() => break,
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(text))) if text.as_str().contains("\"tick\"") => {
                            ticks.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(_)) => {}
                        _ => return Err("closed while idle".to_owned()),
                    },
                }
            }
            let _ = ws.close(None).await;
            Ok(())
        });
    }
    // Every socket is open (or failed) once all permits are back.
    let _all = permits.acquire_many(args.concurrency.max(1) as u32).await?;
    let open_seconds = started.elapsed().as_secs_f64();
    let rss_open = rss_kib(args.first_pid());
    let cpu_start = cpu_seconds(args.first_pid());
    let hold_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.hold_seconds).min(deadline.saturating_duration_since(Instant::now())))
        .await;
    let held = hold_started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(args.first_pid()).zip(cpu_start).map(|(end, start)| end - start);
    let rss_held = rss_kib(args.first_pid());
    release.cancel();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(result) = holders.join_next().await {
        if let Err(code) = result? {
            *errors.entry(code).or_default() += 1;
        }
    }
    let open = opened.load(Ordering::Relaxed);
    Ok(json!({
        "url": args.url_json(),
        "mode": "idle",
        "sockets": open,
        "errors": errors,
        "openSeconds": (open_seconds * 1000.0).round() / 1000.0,
        "holdSeconds": (held * 1000.0).round() / 1000.0,
        "ticksReceived": ticks.load(Ordering::Relaxed),
        "serverRssKiB": { "before": rss_before, "allOpen": rss_open, "afterHold": rss_held },
        "serverRssKiBPerSocket": rss_open.zip(rss_before).map(|(open_kib, before)| {
            ((open_kib as f64 - before as f64) / open.max(1) as f64 * 100.0).round() / 100.0
        }),
        "serverCpuPercentWhileIdle": cpu_used.map(|cpu| (cpu / held * 10_000.0).round() / 100.0),
    }))
}

/// Process spawn → first hello-ok, `--runs` times; the gateway is stopped after each.
async fn cold_starts(args: &Args, deadline: Instant) -> anyhow::Result<Value> {
    let command = args.spawn.as_deref().context("--mode cold-start needs --spawn '<command starting the gateway>'")?;
    let spec = ConnectSpec::operator(&["operator.read"], Some(&args.token));
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        let started = Instant::now();
        let mut child = std::process::Command::new("sh");
        child.args(["-c", &format!("exec {command}")]).stdout(std::process::Stdio::null());
        child.stderr(std::process::Stdio::null());
        // A process group of its own, so stopping it stops whatever it started, and nothing else.
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.spawn().context("spawning the gateway")?;
        let identity = DeviceIdentity::generate();
        let mut first = None;
        while Instant::now() < deadline {
            if let Ok(hello) = handshake(&args.url[0], &spec, &identity).await {
                first = Some((started.elapsed().as_secs_f64() * 1000.0, hello));
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited before answering: {status}");
            }
            // Polling the port of a process that is starting: the measurement's resolution.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rss = rss_kib(Some(child.id()));
        let stopped = stop_group(child).await?;
        let (ms, _) = first.context("no hello-ok before --max-seconds")?;
        runs.push(json!({ "ms": (ms * 10.0).round() / 10.0, "rssKiB": rss, "exit": stopped.code() }));
    }
    let mut ms: Vec<f64> = runs.iter().filter_map(|run| run["ms"].as_f64()).collect();
    ms.sort_by(f64::total_cmp);
    Ok(json!({ "url": args.url[0], "mode": "cold-start", "runs": runs, "medianMs": ms.get(ms.len() / 2) }))
}

/// SIGTERM to the gateway's process group; SIGKILL if it has not exited 10 s later.
async fn stop_group(mut child: std::process::Child) -> anyhow::Result<std::process::ExitStatus> {
    let group = format!("-{}", child.id());
    let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
    let patience = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= patience {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).status();
            return Ok(tokio::task::spawn_blocking(move || child.wait()).await??);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `count` paired devices with a token each, through the store's import API, in transactions of 10,000.
async fn seed(args: &Args) -> anyhow::Result<Value> {
    use pairgate::domain::{ClientMeta, TokenInfo};
    use pairgate::domain::{DeviceId, PublicKey, Role, ScopeSet, TokenDigest};
    use pairgate::store::ImportedDevice;
    use pairgate::store::{Location, MigratePolicy, Store};
    use sha2::{Digest, Sha256};
    let path = args.db.as_deref().context("--mode seed needs --db <pairgate database>")?;
    let location = match path.to_str() {
        Some(text) => Location::parse(text)?,
        None => Location::Sqlite(path.to_path_buf()),
    };
    let (store, _) = Store::open(&location, MigratePolicy::Apply { backup_exists: true }).await?;
    let scopes = ScopeSet::parse(&["operator.read"]).expect("a known scope");
    let now = now_ms();
    // Distinct from any real key: derived from a per-run salt and the device's number.
    let salt: [u8; 16] = rand::random();
    let started = Instant::now();
    let mut added = 0u64;
    while added < args.count {
        let chunk: Vec<ImportedDevice> = (added..(added + 10_000).min(args.count))
            .map(|n| {
                let key_bytes: [u8; 32] =
                    Sha256::new().chain_update(salt).chain_update(n.to_le_bytes()).finalize().into();
                let public_key = PublicKey::from_bytes(key_bytes);
                let digest: [u8; 32] = Sha256::digest(key_bytes).into();
                ImportedDevice {
                    device_id: DeviceId::from_public_key(&public_key),
                    public_key,
                    meta: ClientMeta { client_id: Some("bench-seed".into()), ..ClientMeta::default() },
                    remote_ip: None,
                    created_at_ms: now,
                    approved_at_ms: now,
                    last_seen_at_ms: None,
                    grants: vec![(Role::Operator, scopes.clone())],
                    tokens: vec![TokenInfo {
                        role: Role::Operator,
                        digest: TokenDigest::from_slice(&digest).expect("32 bytes"),
                        scopes: scopes.clone(),
                        issued_at_ms: now,
                        rotated_at_ms: None,
                        revoked_at_ms: None,
                        last_used_at_ms: None,
                    }],
                }
            })
            .collect();
        let counts = store.apply_import(&chunk, &[], &[], "bench seed", false, now).await?;
        added += counts.devices.max(chunk.len() as u64);
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    Ok(json!({
        "mode": "seed", "db": path, "added": added, "seconds": (seconds * 1000.0).round() / 1000.0,
        "perSecond": (added as f64 / seconds).round(),
    }))
}

/// A percentile of signed samples (µs), in ms.
fn percentile_signed(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// How a held socket ended: the instant its close frame arrived, and the frame's code.
type Closed = Result<(Instant, u16), String>;

/// Reads a held socket until it closes; sends when, and with which code.
fn watch_close(mut ws: Ws) -> tokio::sync::oneshot::Receiver<Closed> {
    let (tell, told) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let closed = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    let at = Instant::now();
                    break Ok((at, frame.map_or(1005, |frame| u16::from(frame.code))));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(format!("socket error: {error}")),
                None => break Err("socket ended without a close frame".to_owned()),
            }
        };
        let _ = tell.send(closed);
        // Answers the close (tungstenite queued the reply) and lets the socket go.
        let _ = ws.close(None).await;
    });
    told
}

/// Revocation to close: `--devices` devices pair and keep a socket open on `--url` (round-robin when
/// several) with their device tokens; then, one at a time, each device's operator token is revoked
/// through `--revoke-url`'s REST API, and the time from that reply's arrival to the socket's close frame
/// is measured.
async fn revocations(args: &Args, deadline: Instant, rss_before: &[Option<u64>]) -> anyhow::Result<Value> {
    let revoke_base = http_base(args.revoke_url.as_deref().unwrap_or(&args.url[0]));
    let pairing = ConnectSpec::operator(&["operator.read"], Some(&args.token));
    let mut held = Vec::with_capacity(args.devices);
    for n in 0..args.devices {
        let identity = DeviceIdentity::generate();
        let url = args.url_for(n);
        let hello =
            handshake(url, &pairing, &identity).await.map_err(|code| anyhow::anyhow!("pairing failed: {code}"))?;
        let mut spec = pairing.clone();
        spec.token = None;
        spec.device_token =
            Some(hello["auth"]["deviceToken"].as_str().context("the gateway issued no device token")?.to_owned());
        let ws = open_session(url, &spec, &identity).await.map_err(|code| anyhow::anyhow!("session: {code}"))?;
        held.push((identity.id().to_string(), watch_close(ws)));
    }
    let http = reqwest::Client::new();
    // One request first, so the measured ones reuse a warm keep-alive connection.
    let _ = http.get(format!("{revoke_base}/api/v1/requests")).bearer_auth(&args.token).send().await;
    let marks = CpuMarks::take(args);
    let started = Instant::now();
    let (mut to_close, mut replies, mut from_request) = (Vec::new(), Vec::new(), Vec::new());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for (device_id, closed) in held {
        if Instant::now() >= deadline {
            *errors.entry("not revoked before --max-seconds".into()).or_default() += 1;
            continue;
        }
        let sent = Instant::now();
        let response = http
            .post(format!("{revoke_base}/api/v1/devices/{device_id}/tokens/operator/revoke"))
            .bearer_auth(&args.token)
            .send()
            .await;
        let replied = Instant::now();
        match response.map(|r| r.status()) {
            Ok(status) if status.is_success() => replies.push(replied.duration_since(sent).as_micros() as u64),
            Ok(status) => {
                *errors.entry(format!("revoke: {status}")).or_default() += 1;
                continue;
            }
            Err(error) => {
                *errors.entry(format!("revoke: {error}")).or_default() += 1;
                continue;
            }
        }
        let patience = (replied + Duration::from_secs(5)).min(deadline.max(replied));
        match tokio::time::timeout_at(patience.into(), closed).await {
            Ok(Ok(Ok((at, code)))) => {
                *codes.entry(code).or_default() += 1;
                if code == 4001 {
                    // Signed: a node closes its own sockets before it answers.
                    let micros = if at >= replied {
                        at.duration_since(replied).as_micros() as i64
                    } else {
                        -(replied.duration_since(at).as_micros() as i64)
                    };
                    to_close.push(micros);
                    from_request.push(at.duration_since(sent).as_micros() as u64);
                } else {
                    *errors.entry(format!("closed with {code}, not 4001")).or_default() += 1;
                }
            }
            Ok(Ok(Err(error))) => *errors.entry(error).or_default() += 1,
            Ok(Err(_)) => *errors.entry("socket watcher gone".into()).or_default() += 1,
            Err(_) => *errors.entry("no close within 5 s of the reply".into()).or_default() += 1,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    to_close.sort_unstable();
    replies.sort_unstable();
    from_request.sort_unstable();
    let mut report = json!({
        "url": args.url_json(),
        "revokeUrl": revoke_base,
        "mode": "revocation",
        "devices": args.devices,
        "completed": to_close.len(),
        "errors": errors,
        "closeCodes": codes,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "closedBeforeReply": to_close.iter().filter(|&&micros| micros < 0).count(),
        "latencyMs": {
            "min": percentile_signed(&to_close, 0.0),
            "p50": percentile_signed(&to_close, 50.0), "p90": percentile_signed(&to_close, 90.0),
            "p99": percentile_signed(&to_close, 99.0), "max": percentile_signed(&to_close, 100.0),
        },
        // From sending the revocation to the close frame (the end-to-end figure; never negative).
        "requestToCloseMs": {
            "p50": percentile(&from_request, 50.0), "p99": percentile(&from_request, 99.0),
            "max": percentile(&from_request, 100.0),
        },
        "revokeReplyMs": {
            "p50": percentile(&replies, 50.0), "p99": percentile(&replies, 99.0), "max": percentile(&replies, 100.0),
        },
        "serverRssKiB": { "before": rss_before.first().copied().flatten(), "after": rss_kib(args.first_pid()) },
    });
    marks.used(args, rss_before, &mut report);
    Ok(report)
}

enum PairingAsk {
    Requested(String),
    Other(String),
}

/// A handshake as if through a proxy for `forwarded`; a pairing refusal yields its request id.
async fn handshake_via_proxy(
    url: &str,
    spec: &ConnectSpec,
    identity: &DeviceIdentity,
    forwarded: &str,
) -> Result<Value, PairingAsk> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().map_err(|e| PairingAsk::Other(e.to_string()))?;
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded.parse().map_err(|_| PairingAsk::Other("bad address".into()))?);
    let (mut ws, reply) = connect_session(request, spec, identity).await.map_err(PairingAsk::Other)?;
    let _ = ws.close(None).await;
    if reply["ok"] == true {
        return Ok(reply["payload"].clone());
    }
    match reply["error"]["details"]["requestId"].as_str() {
        Some(id) => Err(PairingAsk::Requested(id.to_owned())),
        None => Err(PairingAsk::Other(reply["error"]["message"].as_str().unwrap_or("?").to_owned())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for url in args.url.iter().chain(&args.revoke_url) {
        let host = url.trim_start_matches("ws://").trim_start_matches("http://").split(['/', ':']).next();
        let host = host.unwrap_or_default();
        if !matches!(host, "127.0.0.1" | "localhost" | "[" | "[::1]") && !host.starts_with("127.") {
            bail!("refusing {url}: the load generator targets loopback addresses only");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let rss_before_all: Vec<Option<u64>> = args.server_pid.iter().map(|pid| rss_kib(Some(*pid))).collect();
    let whole_report = match args.mode.as_str() {
        "revocation" => Some(revocations(&args, deadline, &rss_before_all).await?),
        "idle" => Some(idle_sockets(&args, deadline).await?),
        "cold-start" => Some(cold_starts(&args, deadline).await?),
        "seed" => Some(seed(&args).await?),
        _ => None,
    };
    if let Some(report) = whole_report {
        println!("{report}");
        return Ok(());
    }
    let rss_before = rss_before_all.first().copied().flatten();
    let (outcome, elapsed, marks) = match args.mode.as_str() {
        "approvals" => approvals(&args).await?,
        "echo" => {
            let marks = CpuMarks::take(&args);
            let started = Instant::now();
            (echoes(&args, deadline).await?, started.elapsed().as_secs_f64(), marks)
        }
        "rpc" => {
            let devices = Arc::new(pair_devices(&args).await?);
            let marks = CpuMarks::take(&args);
            let started = Instant::now();
            (rpc_calls(&args, devices, deadline).await?, started.elapsed().as_secs_f64(), marks)
        }
        mode => {
            let devices = Arc::new(pair_devices(&args).await?);
            let marks = CpuMarks::take(&args);
            let started = Instant::now();
            let outcome = if mode == "rate" {
                fixed_rate(&args, devices, deadline).await?
            } else {
                closed_loop(&args, devices, deadline).await?
            };
            (outcome, started.elapsed().as_secs_f64(), marks)
        }
    };
    let mut report = report(&args, outcome.0, outcome.1, elapsed, rss_before);
    marks.used(&args, &rss_before_all, &mut report);
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} {} in {:.2}s = {}/s (C={}, {} devices, auth {}); latency ms p50 {} p90 {} p99 {} p99.9 {}; errors {}; server RSS KiB {} -> {}",
            report["completed"],
            args.mode,
            elapsed,
            report["perSecond"],
            args.concurrency,
            args.devices,
            args.auth,
            report["latencyMs"]["p50"],
            report["latencyMs"]["p90"],
            report["latencyMs"]["p99"],
            report["latencyMs"]["p99.9"],
            report["errors"],
            report["serverRssKiB"]["before"],
            report["serverRssKiB"]["after"],
        );
    }
    Ok(())
}
