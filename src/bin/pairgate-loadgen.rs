//! Connect-path load generator: full signed handshakes (open → challenge → signed connect → hello-ok →
//! close) against any OpenClaw-compatible gateway on loopback, from pre-paired device identities.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let host = args.url.trim_start_matches("ws://").split(['/', ':']).next().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[" | "[::1]") && !host.starts_with("127.") {
        bail!("refusing {}: the load generator targets loopback addresses only", args.url);
    }

    // Pair the identities through the public protocol: a local connect with the gateway token.
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
    let devices = Arc::new(devices);

    let rss_before = rss_kib(args.server_pid);
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (devices, issued, url) = (devices.clone(), issued.clone(), args.url.clone());
        let count = args.count;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break;
                }
                let (identity, spec) = &devices[n as usize % devices.len()];
                let t0 = Instant::now();
                match handshake(&url, spec, identity).await {
                    Ok(_) => latencies.push(t0.elapsed().as_micros() as u64),
                    Err(code) => *errors.entry(code).or_default() += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        for (code, n) in e {
            *errors.entry(code).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let report = json!({
        "url": args.url,
        "devices": args.devices,
        "concurrency": args.concurrency,
        "auth": args.auth,
        "handshakes": latencies.len(),
        "errors": errors,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "handshakesPerSecond": (latencies.len() as f64 / elapsed).round(),
        "latencyMs": {
            "p50": percentile(&latencies, 50.0), "p90": percentile(&latencies, 90.0),
            "p99": percentile(&latencies, 99.0), "p99.9": percentile(&latencies, 99.9),
        },
        "serverRssKiB": { "before": rss_before, "after": rss_kib(args.server_pid) },
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} handshakes in {:.2}s = {}/s (C={}, {} devices, auth {}); latency ms p50 {} p90 {} p99 {} p99.9 {}; errors {}; server RSS KiB {} -> {}",
            report["handshakes"],
            elapsed,
            report["handshakesPerSecond"],
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
