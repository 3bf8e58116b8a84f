//! Real `pairgate` processes for the suites that run the binary: started on port 0 with their log in a
//! file, stopped by signal (or killed with the test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::eventually;

pub const BIN: &str = env!("CARGO_BIN_EXE_pairgate");

pub const START_WAIT: Duration = Duration::from_secs(30);

pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Running {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap(); // SIGKILL
        self.child.wait().await.unwrap();
    }

    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        tokio::time::timeout(START_WAIT, self.child.wait()).await.expect("exits after SIGTERM").unwrap()
    }

    /// SIGTERM, then the exit status if the process ended within `limit` (it is killed otherwise).
    pub async fn terminate_within(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
        assert!(sent.success());
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => Some(status.unwrap()),
            Err(_) => {
                self.kill9().await;
                None
            }
        }
    }

    /// A line of `/proc/<pid>/status`, in KiB (`VmHWM`: the peak resident set; `VmRSS`: now).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let line = status.lines().find(|line| line.starts_with(&format!("{field}:"))).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Waits (bounded) until the log has a line containing `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let found = eventually(START_WAIT, || self.stderr().contains(text)).await;
        assert!(found, "no log line with {text:?}:\n{}", self.stderr());
    }
}

pub fn command(home: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    command
}

/// Starts `pairgate serve` with `args` and waits for its "listening" line.
pub async fn serve(home: &Path, args: &[&str], stderr_name: &str) -> Running {
    serve_from(command(home), home, args, stderr_name).await
}

/// `command`, run by a shell that sets `umask` first.
pub fn command_under_umask(home: &Path, umask: &str) -> Command {
    let command = command(home);
    let program = command.as_std().get_program().to_owned();
    let mut shell = Command::new("sh");
    shell.env_clear().env("HOME", home).env("PATH", std::env::var("PATH").unwrap_or_default());
    shell.arg("-c").arg(format!("umask {umask} && exec \"$0\" \"$@\"")).arg(program);
    shell
}

/// Starts `pairgate serve` through `sh -c '<shell>; exec pairgate serve …'` (to set limits with `ulimit`);
/// the process is the same, exec'd.
pub async fn serve_under(home: &Path, shell: Option<&str>, args: &[&str], stderr_name: &str) -> Running {
    let command = match shell {
        None => command(home),
        Some(shell) => {
            let mut command = Command::new("sh");
            command
                .env_clear()
                .env("HOME", home)
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("RUST_LOG", "info")
                .args(["-c", &format!("{shell} && exec \"$0\" \"$@\""), BIN]);
            command
        }
    };
    serve_from(command, home, args, stderr_name).await
}

pub async fn serve_from(mut command: Command, home: &Path, args: &[&str], stderr_name: &str) -> Running {
    let stderr_path = home.join(stderr_name);
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut child = command
        .arg("serve")
        .args(args)
        .env("PAIRGATE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(START_WAIT, lines.next_line())
        .await
        .expect("pairgate starts")
        .unwrap()
        .unwrap_or_else(|| panic!("pairgate exited: {}", std::fs::read_to_string(&stderr_path).unwrap()));
    let addr = line
        .strip_prefix("pairgate listening on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .parse()
        .unwrap();
    Running { child, addr, stderr_path }
}

/// Runs a one-shot pairgate command; (success, stdout, stderr).
pub async fn pairgate(home: &Path, args: &[&str]) -> (bool, String, String) {
    let output = command(home).args(args).output().await.unwrap();
    (output.status.success(), String::from_utf8(output.stdout).unwrap(), String::from_utf8(output.stderr).unwrap())
}
