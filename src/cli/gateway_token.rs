//! The gateway token pairgate keeps when `serve` runs without `--token`/`--password`: its argon2id hash in
//! the database, its value only in a `0600` file beside it (`<db>.gateway-token`). `serve` makes one on
//! first start; `pairgate gateway-token new|set|check` replaces or checks it, so that an operator always
//! has a token that works (after a restore, an import, or a lost file).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::args::{DbArg, GatewayTokenAction, SecretArg};
use crate::auth::secrets::{SecretKind, SharedSecret, hash_secret};
use crate::clock::{Clock, Millis, SystemClock};
use crate::domain::TokenSecret;
use crate::store::{Actor, Store, sibling_path};

/// A token of one's own must be at least this long: the REST bearer and every local client's connect
/// rest on it.
const MIN_TOKEN_CHARS: usize = 16;

pub fn token_file(db_path: &Path) -> PathBuf {
    sibling_path(db_path, ".gateway-token")
}

/// How the token file stands against the hash in the database.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FileState {
    /// The file holds the database's token.
    Matches,
    /// The database has no gateway token (serve has not made one, or runs with --token/--password).
    NoToken,
    /// The database has a token, but there is no file: nobody can read the token here.
    Missing,
    /// The file holds some other token (a restore or an import brought in another database's hash).
    Differs,
}

/// Compares the token file with the database's hash (one argon2 verification).
pub async fn file_state(store: &Store, db_path: &Path) -> anyhow::Result<FileState> {
    let Some(phc) = store.gateway_token_hash().await? else { return Ok(FileState::NoToken) };
    let file = token_file(db_path);
    if !file.exists() {
        return Ok(FileState::Missing);
    }
    let value = SecretArg::from_file(&file)?;
    let stored = SharedSecret::from_argon2(SecretKind::Token, phc).map_err(anyhow::Error::msg)?;
    Ok(if stored.verify(value.expose()).await { FileState::Matches } else { FileState::Differs })
}

/// One line for an operator on where the gateway token stands; `None` when all is well.
pub fn advice(state: &FileState, db_path: &Path) -> Option<String> {
    let file = token_file(db_path);
    let db = db_path.display();
    match state {
        FileState::Matches | FileState::NoToken => None,
        FileState::Missing => Some(format!(
            "the database has a gateway token but its token file {} is missing: clients that know the token \
             still connect; to make a new one, run `pairgate gateway-token new --db {db}`",
            file.display()
        )),
        FileState::Differs => Some(format!(
            "the token file {} does not hold this database's gateway token (a restore or an import brought \
             another one): clients that know that token still connect; to make a new one, run \
             `pairgate gateway-token new --db {db}`",
            file.display()
        )),
    }
}

/// After a command that brought in another database's state (restore, import): one line on where the
/// gateway token stands, so that an operator always knows which token works.
pub async fn tell(store: &Store) {
    let Some(db_path) = store.sqlite_path() else {
        return println!("gateway token: on PostgreSQL every node takes it from --token-file or PAIRGATE_TOKEN");
    };
    let file = token_file(db_path);
    let state = match file_state(store, db_path).await {
        Ok(state) => state,
        // The command itself succeeded: say what could not be checked, and do not fail it.
        Err(error) => return println!("gateway token: cannot check the token file {}: {error:#}", file.display()),
    };
    match state {
        FileState::Matches => println!("gateway token: the one in {}", file.display()),
        FileState::NoToken => println!(
            "gateway token: none yet; serve makes one on first start (without --token/--password) and writes it \
             to {}",
            file.display()
        ),
        state => println!("gateway token: {}", advice(&state, db_path).unwrap_or_default()),
    }
}

/// For `serve`: the stored token, or a new one made on first start (written once to the 0600 file, its
/// hash stored).
pub async fn load_or_create(store: &Store, db_path: &Path, now_ms: Millis) -> anyhow::Result<SharedSecret> {
    let file = token_file(db_path);
    if let Some(phc) = store.gateway_token_hash().await? {
        match file_state(store, db_path).await {
            Ok(FileState::Matches) => {
                tracing::info!(token_file = %file.display(), "gateway token: its value is in the token file")
            }
            Ok(state) => {
                let advice = advice(&state, db_path).unwrap_or_default();
                tracing::warn!("gateway token: {advice}");
            }
            Err(error) => tracing::warn!(%error, "gateway token: cannot read the token file"),
        }
        return SharedSecret::from_argon2(SecretKind::Token, phc).map_err(anyhow::Error::msg);
    }
    let token = TokenSecret::generate();
    let staged = Staged::write(&file, token.expose())?;
    let phc = hash(token.expose()).await?;
    if !store.init_gateway_token_hash(&phc, &Actor::System, now_ms).await? {
        anyhow::bail!("another process initialized the gateway token at the same time; start again");
    }
    staged.publish()?;
    tracing::info!(token_file = %file.display(), "gateway token generated; clients use the value in the token file");
    SharedSecret::from_argon2(SecretKind::Token, phc).map_err(anyhow::Error::msg)
}

async fn hash(token: &str) -> anyhow::Result<String> {
    let token = token.to_owned();
    Ok(tokio::task::spawn_blocking(move || hash_secret(&token)).await?)
}

/// `pairgate gateway-token new|set|check`.
pub async fn command(action: GatewayTokenAction, db: &DbArg) -> anyhow::Result<()> {
    if let crate::store::Location::Postgres(url) = db.location()? {
        anyhow::bail!(
            "{url}: on PostgreSQL pairgate keeps no gateway token of its own (there is no file beside a database \
             URL): give every node the same token with serve --token-file FILE or PAIRGATE_TOKEN"
        );
    }
    let db_path = db.path()?;
    if let GatewayTokenAction::Check = action {
        let store = super::offline::open_for_reading(db).await?;
        let state = file_state(&store, &db_path).await;
        store.close().await;
        return match state? {
            FileState::Matches => {
                println!("the token file {} holds this database's gateway token", token_file(&db_path).display());
                Ok(())
            }
            FileState::NoToken => anyhow::bail!(
                "{} has no gateway token of its own: serve makes one on first start without --token/--password",
                db_path.display()
            ),
            state => anyhow::bail!("{}", advice(&state, &db_path).unwrap_or_default()),
        };
    }
    let (token, show) = match action {
        GatewayTokenAction::New { show } => (TokenSecret::generate().expose().to_owned(), show),
        GatewayTokenAction::Set { from_file } => (read_own_token(&from_file)?, false),
        GatewayTokenAction::Check => unreachable!("answered above"),
    };
    let store = super::offline::open(db).await?;
    let file = token_file(&db_path);
    let result = async {
        let staged = Staged::write(&file, &token)?;
        let phc = hash(&token).await?;
        store.replace_gateway_token_hash(&phc, &Actor::local_cli(), SystemClock.now_ms()).await?;
        staged.publish()
    }
    .await;
    store.close().await;
    result?;
    let message = format!(
        "the new gateway token is in {} (mode 0600); a running serve keeps the old one until it restarts \
         (serve --token/--password override it)",
        file.display()
    );
    if show {
        eprintln!("{message}");
        println!("{token}");
    } else {
        println!("{message}");
    }
    Ok(())
}

/// A token of the operator's own, from a file's first line or standard input (`-`).
fn read_own_token(from: &Path) -> anyhow::Result<String> {
    let token = if from == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().take(64 * 1024).read_to_string(&mut text)?;
        text.lines().next().unwrap_or("").trim_end_matches('\r').to_owned()
    } else {
        SecretArg::from_file(from)?.expose().to_owned()
    };
    if token.trim() != token || token.chars().any(char::is_control) {
        anyhow::bail!("the token has surrounding spaces or control characters; clients could not send it as given");
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        anyhow::bail!("the token is shorter than {MIN_TOKEN_CHARS} characters; use a long random one");
    }
    Ok(token)
}

/// A new token file, written whole to a private file of its own beside the token file, and put in its
/// place (`publish`) only once the database holds the token's hash: a database that refuses the hash
/// leaves the old file, and a crash in between leaves the new value in the staged file, never a stored
/// hash whose token was written nowhere. Dropped unpublished, the staged file is removed.
struct Staged {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Staged {
    fn write(path: &Path, contents: &str) -> anyhow::Result<Staged> {
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        // tempfile creates it 0600 with O_EXCL under a random name: never a planted file or a link.
        let mut file = tempfile::Builder::new().prefix(&format!(".{name}.")).tempfile_in(dir)?;
        writeln!(file, "{contents}")?;
        file.as_file().sync_all()?;
        Ok(Staged { file, path: path.to_owned() })
    }

    /// Renames the staged file over the token file, durably (the directory is synced too).
    fn publish(self) -> anyhow::Result<()> {
        let Staged { file, path } = self;
        file.persist(&path).map_err(|error| anyhow::anyhow!("cannot write {}: {}", path.display(), error.error))?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
