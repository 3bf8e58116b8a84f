//! The command line: `pairgate <command>`. `args` defines it (clap); `serve` runs the server; `database`
//! holds the commands on the database file itself (migrate, backup, restore); `offline` the operator
//! commands that work on the file while a server runs or not, through the same application layer;
//! `gateway_token` the token pairgate keeps when none is configured.

pub mod args;
mod database;
mod gateway_token;
pub mod lock;
pub mod logging;
mod offline;
mod serve;

pub use args::{Cli, Command, DbArg, ServeArgs, default_db_path};

/// Text a client or a foreign file chose, made safe for a terminal: control characters (escape sequences
/// that could rewrite what an operator sees) are shown escaped, never sent.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let escaped =
        text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect();
    std::borrow::Cow::Owned(escaped)
}

/// A one-shot command whose reader goes away (`pairgate devices list | head -1`) ends quietly, as Unix
/// tools do, instead of panicking on the closed pipe: SIGPIPE gets its default action back (Rust ignores
/// it). Not for `serve`, which must outlive a broken log pipe.
pub fn quiet_on_closed_stdout() {
    // SAFETY: `signal` with SIG_DFL, a valid disposition, is safe to call from any thread at any time.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(*args).await,
        Command::Migrate { action, db } => database::migrate(action, &db).await,
        Command::Backup { to, db } => database::backup(&to, &db).await,
        Command::Export { format: _, out, db } => offline::export(out.as_deref(), &db).await,
        Command::Import(args) => offline::import(args).await,
        Command::Restore { from, db } => database::restore(&from, &db).await,
        Command::Devices { action, db } => offline::devices(action, &db).await,
        Command::Tokens { action, db } => offline::tokens(action, &db).await,
        Command::GatewayToken { action, db } => gateway_token::command(action, &db).await,
        Command::Sessions { action, db } => offline::sessions(action, &db).await,
        Command::SetupCode { access, url, join, no_qr, json, db } => {
            offline::setup_code(offline::SetupCodeArgs { access, url, join, no_qr, json }, &db).await
        }
        Command::SetupCodes { action, db } => offline::setup_codes(action, &db).await,
        Command::Audit { limit, device, action, json, db } => {
            let filter = crate::store::AuditFilter::new(device, action);
            offline::audit(&filter, limit, json, &db).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(shown("laptop"), "laptop");
        assert_eq!(shown("evil\u{1b}[2J\u{1b}[1;1Hok"), "evil\\u{1b}[2J\\u{1b}[1;1Hok");
        assert_eq!(shown("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(shown("naïve ✓"), "naïve ✓");
    }
}
