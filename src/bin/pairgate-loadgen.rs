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
    /// Gateway WebSocket URL; loopback only.
    #[arg(long, default_value = "ws://127.0.0.1:18789/")]
    url: String,
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
    #[arg(long, value_parser = ["handshakes", "rate", "approvals"], default_value = "handshakes")]
    mode: String,
    /// Handshakes started per second, for `--mode rate`.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How measured handshakes authenticate: with each device's token, or the gateway token.
    #[arg(long, value_parser = ["device-token", "token"], default_value = "device-token")]
    auth: String,
    /// Server process to read RSS from (/proc/PID/status) before and after.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
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

/// One full handshake; the hello-ok payload, or the error code.
async fn handshake(url: &str, spec: &ConnectSpec, identity: &DeviceIdentity) -> Result<Value, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| format!("connect: {e}"))?;
    let challenge = next_json(&mut ws).await.map_err(|e| e.to_string())?;
    let nonce = challenge["payload"]["nonce"].as_str().ok_or("no challenge nonce")?.to_owned();
    let signed_at = challenge["payload"]["ts"].as_i64().unwrap_or_else(now_ms);
    let request = spec.request("1", Some(identity), &nonce, signed_at);
    ws.send(Message::text(request.to_string())).await.map_err(|e| e.to_string())?;
    let reply = next_json(&mut ws).await.map_err(|e| e.to_string())?;
    let _ = ws.close(None).await;
    if reply["ok"] == true {
        Ok(reply["payload"].clone())
    } else {
        let code = reply["error"]["details"]["code"].as_str().or(reply["error"]["code"].as_str()).unwrap_or("?");
        Err(code.to_owned())
    }
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
        "url": args.url,
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
        },
        "serverRssKiB": { "before": rss_before, "after": rss_kib(args.server_pid) },
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
    for _ in 0..args.devices {
        let identity = DeviceIdentity::generate();
        let hello = handshake(&args.url, &pairing, &identity)
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

/// C workers handshaking back to back.
async fn closed_loop(
    args: &Args,
    devices: Arc<Vec<(DeviceIdentity, ConnectSpec)>>,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (devices, issued, url, count) = (devices.clone(), issued.clone(), args.url.clone(), args.count);
        workers.push(tokio::spawn(async move {
            let mut outcome: Outcome = Default::default();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break;
                }
                let (identity, spec) = &devices[n as usize % devices.len()];
                let t0 = Instant::now();
                match handshake(&url, spec, identity).await {
                    Ok(_) => outcome.0.push(t0.elapsed().as_micros() as u64),
                    Err(code) => *outcome.1.entry(code).or_default() += 1,
                }
            }
            outcome
        }));
    }
    let mut all = Outcome::default();
    for worker in workers {
        merge(&mut all, worker.await?);
    }
    Ok(all)
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
        let (devices, url) = (devices.clone(), args.url.clone());
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
async fn approvals(args: &Args) -> anyhow::Result<(Outcome, f64)> {
    let ask = ConnectSpec::operator(&["operator.read"], Some(&args.token));
    let mut request_ids = Vec::with_capacity(args.count as usize);
    for n in 0..args.count {
        let identity = DeviceIdentity::generate();
        let forwarded = format!("198.18.{}.{}", (n / 250) % 250, n % 250 + 1);
        match handshake_via_proxy(&args.url, &ask, &identity, &forwarded).await {
            Err(PairingAsk::Requested(id)) => request_ids.push(id),
            Err(PairingAsk::Other(code)) => {
                bail!("expected a pairing request, got {code} (start pairgate with --trusted-proxy 127.0.0.1)")
            }
            Ok(_) => bail!("the device was let in without pairing: is 127.0.0.1 a trusted proxy on the server?"),
        }
    }
    let base = args.url.replacen("ws://", "http://", 1).trim_end_matches('/').to_owned();
    let queue = Arc::new(std::sync::Mutex::new(request_ids));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (queue, http, base, token) = (queue.clone(), http.clone(), base.clone(), args.token.clone());
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
    let mut all = Outcome::default();
    for worker in workers {
        merge(&mut all, worker.await?);
    }
    Ok((all, started.elapsed().as_secs_f64()))
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
    let (mut ws, _) =
        tokio_tungstenite::connect_async(request).await.map_err(|e| PairingAsk::Other(format!("connect: {e}")))?;
    let challenge = next_json(&mut ws).await.map_err(|e| PairingAsk::Other(e.to_string()))?;
    let nonce = challenge["payload"]["nonce"].as_str().unwrap_or_default().to_owned();
    let signed_at = challenge["payload"]["ts"].as_i64().unwrap_or_else(now_ms);
    let frame = spec.request("1", Some(identity), &nonce, signed_at);
    ws.send(Message::text(frame.to_string())).await.map_err(|e| PairingAsk::Other(e.to_string()))?;
    let reply = next_json(&mut ws).await.map_err(|e| PairingAsk::Other(e.to_string()))?;
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
    let host = args.url.trim_start_matches("ws://").split(['/', ':']).next().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[" | "[::1]") && !host.starts_with("127.") {
        bail!("refusing {}: the load generator targets loopback addresses only", args.url);
    }
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let rss_before = rss_kib(args.server_pid);
    let (outcome, elapsed) = match args.mode.as_str() {
        "approvals" => approvals(&args).await?,
        mode => {
            let devices = Arc::new(pair_devices(&args).await?);
            let started = Instant::now();
            let outcome = if mode == "rate" {
                fixed_rate(&args, devices, deadline).await?
            } else {
                closed_loop(&args, devices, deadline).await?
            };
            (outcome, started.elapsed().as_secs_f64())
        }
    };
    let report = report(&args, outcome.0, outcome.1, elapsed, rss_before);
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
