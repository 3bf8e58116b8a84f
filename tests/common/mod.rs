//! Test harness: a real server on 127.0.0.1:0 over a real database file, and a WebSocket client that
//! speaks the gateway protocol with a real Ed25519 identity.
#![allow(dead_code)]

pub mod processes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use pairgate::app::App;
use pairgate::auth::secrets::{SecretKind, SharedSecret};
use pairgate::client::{ConnectSpec, DeviceIdentity, PayloadVersion};
use pairgate::clock::{Clock, ManualClock};
use pairgate::domain::{DeviceId, PublicKey};
use pairgate::server::{Config, Server as Assembled};
use pairgate::store::{Location, MigratePolicy, Store};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TOKEN: &str = "test-gateway-token";
/// Upper bound on waiting for a frame that must come; a hang fails the test instead of blocking CI.
pub const FRAME_WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Server {
    pub addr: SocketAddr,
    pub store: Store,
    pub clock: ManualClock,
    pub app: Arc<App>,
    pub gateway: Arc<pairgate::gateway::Gateway>,
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, config).await
    }

    /// Starts over the database of `dir` (a restart keeps the directory, and so the database).
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Server {
        let (store, _) = open_test_store(dir.path()).await;
        let clock = ManualClock::new(pairgate::clock::SystemClock.now_ms());
        let secret = Arc::new(SharedSecret::from_plaintext(SecretKind::Token, TOKEN));
        let assembled = Assembled::new(store.clone(), Arc::new(clock.clone()), secret, config);
        let (app, gateway) = (assembled.app.clone(), assembled.gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(pairgate::server::run(listener, assembled));
        Server { addr, store, clock, app, gateway, dir, task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Graceful stop; returns the database directory for a restart.
    pub async fn stop(self) -> tempfile::TempDir {
        self.app.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.dir
    }
}

/// The engine the integration suites run on: SQLite, or PostgreSQL with `PAIRGATE_TEST_ENGINE=postgres`
/// (`scripts/test` runs them on both).
pub fn test_engine_is_postgres() -> bool {
    match std::env::var("PAIRGATE_TEST_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("PAIRGATE_TEST_ENGINE={other}: sqlite or postgres"),
    }
}

/// Where the test store of `dir` lives: `dir/pairgate.db`, or on PostgreSQL a database of this binary's
/// shared cluster whose name is kept in `dir/pg-database` (so that a restart finds it again).
pub fn test_location(dir: &std::path::Path) -> Location {
    if !test_engine_is_postgres() {
        return Location::Sqlite(dir.join("pairgate.db"));
    }
    let cluster =
        pairgate_testkit::postgres::Cluster::for_tests().expect("PAIRGATE_TEST_ENGINE=postgres needs PostgreSQL");
    let name_file = dir.join("pg-database");
    let name = match std::fs::read_to_string(&name_file) {
        Ok(name) => name,
        Err(_) => {
            let name = cluster.new_database("suite");
            std::fs::write(&name_file, &name).unwrap();
            name
        }
    };
    Location::parse(&cluster.url_with_password(&name)).unwrap()
}

/// Opens (creating) the test store of `dir`.
pub async fn open_test_store(dir: &std::path::Path) -> (Store, pairgate::store::OpenReport) {
    Store::open(&test_location(dir), MigratePolicy::Apply { backup_exists: true }).await.unwrap()
}

/// Opens (creating) a SQLite store at `path`: for tests of what only the SQLite engine does.
pub async fn open_sqlite(path: &std::path::Path) -> Store {
    Store::open(&Location::Sqlite(path.to_path_buf()), MigratePolicy::Apply { backup_exists: false }).await.unwrap().0
}

/// An Ed25519 device identity with a fixed seed.
#[derive(Clone)]
pub struct Device {
    pub identity: DeviceIdentity,
}

impl Device {
    pub fn new(seed: u8) -> Device {
        Device { identity: DeviceIdentity::from_seed([seed; 32]) }
    }

    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    pub fn id(&self) -> DeviceId {
        self.identity.id()
    }
}

/// One connect attempt, described field by field.
#[derive(Clone)]
pub struct Connect {
    pub client_id: String,
    pub client_mode: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub token: Option<String>,
    pub password: Option<String>,
    pub device_token: Option<String>,
    pub bootstrap_token: Option<String>,
    pub device: Option<Device>,
    pub platform: String,
    pub device_family: Option<String>,
    pub protocol: (i64, i64),
    /// 3 or 2; anything else sends no signature-valid payload.
    pub signature_version: u8,
    pub headers: Vec<(&'static str, String)>,
    /// Shifts `signedAt` away from the server's clock (stale signatures).
    pub signed_at_offset_ms: i64,
    /// Signs this nonce instead of the challenge's.
    pub nonce_override: Option<String>,
    /// Sends this device id instead of the key's.
    pub id_override: Option<String>,
    pub display_name: Option<String>,
}

impl Connect {
    pub fn cli() -> Connect {
        Connect {
            client_id: "cli".into(),
            client_mode: "cli".into(),
            role: "operator".into(),
            scopes: vec!["operator.read".into()],
            token: Some(TOKEN.into()),
            password: None,
            device_token: None,
            bootstrap_token: None,
            device: None,
            platform: "linux".into(),
            device_family: None,
            protocol: (4, 4),
            signature_version: 3,
            headers: vec![],
            signed_at_offset_ms: 0,
            nonce_override: None,
            id_override: None,
            display_name: None,
        }
    }

    pub fn backend() -> Connect {
        Connect { client_id: "gateway-client".into(), client_mode: "backend".into(), ..Connect::cli() }
    }

    pub fn device(mut self, device: &Device) -> Connect {
        self.device = Some(device.clone());
        self
    }

    pub fn scopes(mut self, scopes: &[&str]) -> Connect {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn token(mut self, token: Option<&str>) -> Connect {
        self.token = token.map(str::to_owned);
        self
    }

    pub fn device_token(mut self, token: &str) -> Connect {
        self.device_token = Some(token.to_owned());
        self
    }

    /// A setup code's bootstrap token, presented alone (no gateway token), as `openclaw node run --pair`
    /// does.
    pub fn bootstrap_token(mut self, token: &str) -> Connect {
        self.bootstrap_token = Some(token.to_owned());
        self.token = None;
        self
    }

    /// `client.displayName` (unsigned: it is not part of the signed payload).
    pub fn display_name(mut self, name: &str) -> Connect {
        self.display_name = Some(name.to_owned());
        self
    }

    /// As if through a trusted proxy on loopback for a remote client.
    pub fn via_proxy_for(mut self, ip: &str) -> Connect {
        self.headers.push(("x-forwarded-for", ip.to_owned()));
        self
    }

    pub fn spec(&self) -> ConnectSpec {
        ConnectSpec {
            client_id: self.client_id.clone(),
            client_mode: self.client_mode.clone(),
            platform: self.platform.clone(),
            device_family: self.device_family.clone(),
            role: self.role.clone(),
            scopes: self.scopes.clone(),
            token: self.token.clone(),
            password: self.password.clone(),
            device_token: self.device_token.clone(),
            bootstrap_token: self.bootstrap_token.clone(),
            min_protocol: self.protocol.0,
            max_protocol: self.protocol.1,
        }
    }

    /// The `connect` params for a challenge `nonce` at server time `now`, tampered as described.
    pub fn params(&self, nonce: &str, now: i64) -> Value {
        let spec = self.spec();
        let mut params = spec.params();
        if let Some(name) = &self.display_name {
            params["client"]["displayName"] = json!(name);
        }
        if let Some(device) = &self.device {
            let id = self.id_override.clone().unwrap_or_else(|| device.id().to_string());
            let nonce = self.nonce_override.clone().unwrap_or_else(|| nonce.to_owned());
            let version = if self.signature_version == 2 { PayloadVersion::V2 } else { PayloadVersion::V3 };
            let signed_at = now + self.signed_at_offset_ms;
            params["device"] = spec.device_proof(&device.identity, &id, &nonce, signed_at, version);
            if self.signature_version == 1 {
                params["device"]["signature"] = json!(device.identity.sign(&format!("v1|{id}|{nonce}")));
            }
        }
        params
    }
}

/// What a connect came to.
pub enum Outcome {
    Hello { hello: Value, ws: Box<Ws> },
    Refused { error: Value, close: Option<(u16, String)> },
}

impl Outcome {
    pub fn hello(self) -> (Value, Ws) {
        match self {
            Outcome::Hello { hello, ws } => (hello, *ws),
            Outcome::Refused { error, close } => panic!("expected hello-ok, got {error} / {close:?}"),
        }
    }

    pub fn refused(self) -> (Value, Option<(u16, String)>) {
        match self {
            Outcome::Refused { error, close } => (error, close),
            Outcome::Hello { hello, .. } => panic!("expected a refusal, got hello-ok {hello}"),
        }
    }
}

/// Opens a socket (with extra headers) and reads the challenge nonce.
pub async fn open(url: &str, headers: &[(&'static str, String)]) -> Result<(Ws, String), tungstenite::Error> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().append(*name, HeaderValue::from_str(value).unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    read_challenge(ws).await
}

/// Opens a socket whose receive buffer is a few KiB (so a client that stops reading stalls the server's
/// writes quickly) and reads the challenge nonce.
pub async fn open_small_window(url: &str) -> (Ws, String) {
    let addr: SocketAddr = url.trim_start_matches("ws://").trim_end_matches('/').parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
    read_challenge(ws).await.unwrap()
}

async fn read_challenge(mut ws: Ws) -> Result<(Ws, String), tungstenite::Error> {
    let challenge = next_json(&mut ws).await.expect("challenge");
    assert_eq!(challenge["type"], "event");
    assert_eq!(challenge["event"], "connect.challenge");
    let nonce = challenge["payload"]["nonce"].as_str().expect("nonce").to_owned();
    Ok((ws, nonce))
}

pub async fn connect(server: &Server, attempt: &Connect) -> Outcome {
    connect_url(&server.url(), attempt, server.now()).await
}

pub async fn connect_url(url: &str, attempt: &Connect, now: i64) -> Outcome {
    let (ws, nonce) = open(url, &attempt.headers).await.expect("open socket");
    connect_on(ws, &nonce, attempt, now).await
}

/// Connects on a socket that has read its challenge.
pub async fn connect_on(mut ws: Ws, nonce: &str, attempt: &Connect, now: i64) -> Outcome {
    send_json(&mut ws, &json!({"type": "req", "id": "c1", "method": "connect", "params": attempt.params(nonce, now)}))
        .await;
    let reply = next_json(&mut ws).await.expect("connect reply");
    assert_eq!(reply["type"], "res", "{reply}");
    assert_eq!(reply["id"], "c1");
    if reply["ok"] == true {
        assert_eq!(reply["payload"]["type"], "hello-ok");
        Outcome::Hello { hello: reply["payload"].clone(), ws: Box::new(ws) }
    } else {
        let close = expect_close(&mut ws).await;
        Outcome::Refused { error: reply["error"].clone(), close }
    }
}

pub async fn send_json(ws: &mut Ws, value: &Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next text frame as JSON, skipping pings and ticks; `None` when the socket closed.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, ws.next()).await.expect("frame within FRAME_WAIT")?;
        match message {
            Ok(Message::Text(text)) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["event"] == "tick" {
                    continue;
                }
                return Some(value);
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads until the server's close frame; its code and reason.
pub async fn expect_close(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        let message = tokio::time::timeout(FRAME_WAIT, ws.next()).await.expect("close within FRAME_WAIT")?;
        match message {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return Some((u16::from(code), reason.to_string()));
            }
            Ok(Message::Close(None)) => return Some((1005, String::new())),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Sends a request on a connected socket and returns its response frame, passing over events.
pub async fn call(ws: &mut Ws, id: &str, method: &str, params: Value) -> Value {
    send_json(ws, &json!({"type": "req", "id": id, "method": method, "params": params})).await;
    loop {
        let frame = next_json(ws).await.expect("response");
        if frame["type"] == "event" {
            continue;
        }
        assert_eq!(frame["id"], id, "{frame}");
        return frame;
    }
}

/// The header of a client frame, masked with the zero key (so the payload is sent as it is).
pub fn frame_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        header.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        header.push(0x80 | 126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(0x80 | 127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

/// A whole client frame (opcode 1: text, 0: continuation).
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame_header(opcode, fin, payload.len() as u64);
    bytes.extend_from_slice(payload);
    bytes
}

/// Writes bytes to the socket under the WebSocket layer (frames built by hand).
pub async fn write_raw(ws: &mut Ws, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    ws.get_mut().write_all(bytes).await
}

/// More bytes than this machine's socket buffers can hold between a writer and a reader that stopped
/// reading: twice the largest TCP send buffer (`net.ipv4.tcp_wmem`), plus 1 MiB.
pub fn more_than_socket_buffers() -> usize {
    let wmem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse::<usize>().ok())
        .unwrap_or(4 * 1024 * 1024);
    (2 * wmem_max + (1 << 20)).min(20 << 20)
}

/// On a connected socket opened with `open_small_window`: sends a request whose reply cannot fit in the
/// socket buffers, never reads it, and returns once the reply has begun to arrive. From then on the
/// server is blocked writing to this socket until the client reads.
pub async fn stall_on_a_huge_reply(ws: &mut Ws) {
    let id = "x".repeat(more_than_socket_buffers());
    ws.send(Message::text(format!(r#"{{"type":"req","id":"{id}","method":"health"}}"#))).await.unwrap();
    let MaybeTlsStream::Plain(stream) = ws.get_ref() else { unreachable!("plain sockets only") };
    let mut byte = [0u8; 1];
    tokio::time::timeout(FRAME_WAIT, stream.peek(&mut byte)).await.expect("the reply begins").unwrap();
}

/// Waits (at most `limit`) until `condition` holds, checking each millisecond; false if it never did.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Parses the text exposition into `name{labels}` → value, checking every line's shape.
pub fn metric_samples(text: &str) -> std::collections::HashMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("malformed line: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("malformed value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad metric name in {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

/// Reads the QR code in a PNG with a QR decoder (rqrr), as a phone's camera would.
pub fn decode_qr(png_bytes: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Grayscale);
    let (width, height) = (frame.width as usize, frame.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| pixels[y * width + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}
