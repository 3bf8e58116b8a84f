//! The command line: `pairgate <command>`. `args` defines it (clap); `serve` runs the server; `database`
//! holds the commands on the database file itself (migrate, backup, restore); `offline` the operator
//! commands that work on the file while a server runs or not, through the same application layer.

pub mod args;
mod database;
pub mod lock;
pub mod logging;
mod offline;
mod serve;

pub use args::{Cli, Command, DbArg, ServeArgs, default_db_path};

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Migrate { action, db } => database::migrate(action, &db).await,
        Command::Backup { to, db } => database::backup(&to, &db).await,
        Command::Export { format: _, out, db } => offline::export(out.as_deref(), &db).await,
        Command::Import(args) => offline::import(args).await,
        Command::Restore { from, db } => database::restore(&from, &db).await,
        Command::Devices { action, db } => offline::devices(action, &db).await,
        Command::Tokens { action, db } => offline::tokens(action, &db).await,
        Command::Sessions { action, db } => offline::sessions(action, &db).await,
        Command::Audit { limit, json, db } => offline::audit(limit, json, &db).await,
    }
}
