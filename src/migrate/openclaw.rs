//! Importing OpenClaw's pairing state.

use std::path::Path;

use crate::cli::DbArg;

pub async fn run(_state_dir: &Path, _db: &DbArg, _dry_run: bool, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
