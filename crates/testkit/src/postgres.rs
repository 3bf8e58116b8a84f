//! A throwaway PostgreSQL cluster: `initdb` in a temp dir, `pg_ctl start` on a free loopback port, run as
//! the `postgres` user when the tests run as root (PostgreSQL refuses to run as root). Stopped, and its
//! directory removed, when the [`Cluster`] is dropped, on panic too; the cluster shared by a test binary
//! ([`Cluster::shared`]) is stopped by a watchdog when the test process ends, however it ends.
//!
//! Where the binaries are: `PAIRGATE_PG_BIN` (a directory holding `initdb` and `pg_ctl`), else the first
//! of PostgreSQL's Debian directories, else `PATH`. [`Cluster::available`] says whether they are there,
//! so a suite can say why it skips.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running cluster. Each test takes a database of its own ([`Cluster::new_database`]), so tests sharing
/// one cluster stay independent and parallel.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The OS user the server runs as (`postgres` when we are root), if not ourselves.
    run_as: Option<String>,
    /// The shared cluster's watchdog, which stops it when the pipe to its stdin closes with this process;
    /// `None` for an owned cluster. Never waited for: it outlives this process by design.
    _watchdog: Option<std::process::Child>,
}

/// A superuser with this password, over TCP with SCRAM: tests pass credentials as operators do.
pub const SUPERUSER: &str = "postgres";
pub const PASSWORD: &str = "pairgate-test-superuser-pw";

impl Cluster {
    /// The directory of `initdb` and `pg_ctl`, if any.
    pub fn binaries() -> Option<PathBuf> {
        let mut candidates: Vec<PathBuf> = std::env::var_os("PAIRGATE_PG_BIN").map(PathBuf::from).into_iter().collect();
        let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| dirs.filter_map(Result::ok).map(|d| d.path().join("bin")).collect())
            .unwrap_or_default();
        debian.sort();
        candidates.extend(debian.into_iter().rev());
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        candidates.into_iter().find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    }

    /// Whether a cluster can be made here, and if not why.
    pub fn available() -> Result<(), String> {
        match Cluster::binaries() {
            Some(_) => Ok(()),
            None => Err("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql, or set \
                         PAIRGATE_PG_BIN)"
                .to_owned()),
        }
    }

    /// The shared cluster, or `None` (having said why) when PostgreSQL is not installed and
    /// `PAIRGATE_REQUIRE_POSTGRES` is not `1`; with it set, a missing PostgreSQL fails the test.
    pub fn for_tests() -> Option<&'static Cluster> {
        match Cluster::available() {
            Ok(()) => Some(Cluster::shared()),
            Err(why) if std::env::var("PAIRGATE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
                panic!("PAIRGATE_REQUIRE_POSTGRES=1 but {why}")
            }
            Err(why) => {
                eprintln!("PostgreSQL test skipped: {why}");
                None
            }
        }
    }

    /// Makes and starts a cluster owned by the caller; panics with the server's own words if it cannot.
    pub fn start() -> Cluster {
        Cluster::make()
    }

    /// The one cluster of this test binary, started on first use and stopped when the process ends.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut cluster = Cluster::make();
            cluster._watchdog = Some(cluster.watchdog());
            cluster
        })
    }

    fn make() -> Cluster {
        let bin = Cluster::binaries().unwrap_or_else(|| panic!("{}", Cluster::available().unwrap_err()));
        let dir = tempfile::Builder::new().prefix("pairgate-pg-").tempdir().expect("a temp dir");
        let run_as = (unsafe { libc::geteuid() } == 0).then(|| SUPERUSER.to_owned());
        let cluster = Cluster { dir, bin, port: free_port(), run_as, _watchdog: None };
        if let Some(user) = &cluster.run_as {
            let status = Command::new("chown").args(["-R", user]).arg(cluster.dir.path()).status().expect("chown");
            assert!(status.success(), "chown {} to {user}", cluster.dir.path().display());
        }
        std::fs::write(cluster.dir.path().join("pwfile"), PASSWORD).expect("the password file");
        if let Some(user) = &cluster.run_as {
            Command::new("chown").args([user]).arg(cluster.dir.path().join("pwfile")).status().expect("chown");
        }
        let data = cluster.data_dir();
        let output = cluster
            .command("initdb")
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C"])
            .arg("--pwfile")
            .arg(cluster.dir.path().join("pwfile"))
            .arg("-D")
            .arg(&data)
            .output()
            .expect("initdb runs");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        cluster.pg_ctl_start();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command running `program` from the cluster's binaries, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    fn pg_ctl_start(&self) {
        // Sockets in the cluster's own dir; TCP on loopback only; fsync off (a test cluster's data is thrown
        // away; durability is the engine's, not under test here).
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let output = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server at once (`-m immediate`, as a crash would), keeping its data.
    pub fn stop(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .output();
    }

    /// Starts the server again on the same port, with the same data.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser, without its password (pass it with `PGPASSWORD` or
    /// [`Cluster::url_with_password`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn url_with_password(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a new, empty database with a name no other test has, and returns its name.
    pub fn new_database(&self, prefix: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs `sql` in `database` with `psql`, and returns what it printed (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let psql = self.bin.join("psql");
        let psql = if psql.is_file() { psql } else { PathBuf::from("psql") };
        let output = Command::new(psql)
            .env("PGPASSWORD", PASSWORD)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", SUPERUSER])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A process that stops the cluster when this process ends (normally, on panic, or killed): it waits
    /// for the end of a pipe only this process holds.
    fn watchdog(&self) -> std::process::Child {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let stop = match &self.run_as {
            Some(user) => {
                format!("runuser -u {user} -- '{}' -D '{}' -m immediate stop", pg_ctl.display(), data.display())
            }
            None => format!("'{}' -D '{}' -m immediate stop", pg_ctl.display(), data.display()),
        };
        let dir = self.dir.path().display().to_string();
        let script = format!("cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf '{dir}'");
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the watchdog starts")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}
