//! Where the database is: what `--db` (or `PAIRGATE_DB`) names.
//!
//! A plain path, or a `sqlite:` URL, is a SQLite database file. A `postgres://` URL names a PostgreSQL
//! database, which this pairgate cannot serve yet: it says so instead of making a directory named
//! `postgres:`, as a path would. Any other URL scheme is refused the same way. A URL's password is never
//! shown: [`Location`]'s `Display` and `Debug` print it as `***`.

use std::fmt;
use std::path::{Path, PathBuf};

pub use pairgate_store_types::redact_url;

/// The database `--db` names.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite database file (created by the commands that may create one).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its `postgres://` or `postgresql://` URL.
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL. It may hold a password, so it is shown only redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL as given, password included: for the driver only, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL itself carries a password (in its user information or a `password=` parameter).
    pub fn has_password(&self) -> bool {
        pairgate_store_types::url_has_password(&self.0)
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Location::Postgres(url) => f.debug_tuple("Postgres").field(url).finish(),
        }
    }
}

/// Why `--db` names nothing pairgate can open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error(
        "--db {0}: PostgreSQL is not supported by this pairgate yet (fleet mode is coming); \
         --db takes the path of a SQLite database file"
    )]
    PostgresNotYet(PostgresUrl),
    #[error(
        "--db {shown}: pairgate does not know the URL scheme `{scheme}:`; --db takes the path of a SQLite \
         database file (or a sqlite: URL)"
    )]
    UnknownScheme { scheme: String, shown: String },
    #[error("--db {0}: the sqlite: URL names no file")]
    EmptySqlitePath(String),
}

impl Location {
    /// What `--db`'s text names. A text is a URL when it starts `scheme://` (or `postgres:`,
    /// `postgresql:`, `sqlite:`); anything else is a file path, taken literally.
    pub fn parse(text: &str) -> Result<Location, LocationError> {
        let Some((scheme, rest)) = url_scheme(text) else {
            return Ok(Location::Sqlite(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(LocationError::EmptySqlitePath(text.to_owned()));
                }
                Ok(Location::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(Location::Postgres(PostgresUrl(text.to_owned()))),
            _ => Err(LocationError::UnknownScheme { scheme: scheme.to_owned(), shown: redact_url(text) }),
        }
    }

    /// The SQLite file, for the engine this pairgate runs; a PostgreSQL URL is refused, clearly.
    pub fn sqlite_path(&self) -> Result<&Path, LocationError> {
        match self {
            Location::Sqlite(path) => Ok(path),
            Location::Postgres(url) => Err(LocationError::PostgresNotYet(url.clone())),
        }
    }
}

/// `(scheme, rest after the colon)` when `text` is a URL: an RFC 3986 scheme followed by `://`, or one of
/// the schemes pairgate knows followed by a bare `:`. A path such as `./backups/a:b.db` is not a URL.
fn url_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let known = ["sqlite", "postgres", "postgresql"].iter().any(|known| scheme.eq_ignore_ascii_case(known));
    (well_formed && (rest.starts_with("//") || known)).then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_db_names() {
        let sqlite = |p: &str| Ok(Location::Sqlite(PathBuf::from(p)));
        let cases: &[(&str, Result<Location, LocationError>)] = &[
            ("pairgate.db", sqlite("pairgate.db")),
            ("/var/lib/pairgate/pairgate.db", sqlite("/var/lib/pairgate/pairgate.db")),
            ("./backups/a:b.db", sqlite("./backups/a:b.db")),
            ("C:stuff.db", sqlite("C:stuff.db")),
            ("sqlite:pairgate.db", sqlite("pairgate.db")),
            ("sqlite:///var/lib/p.db", sqlite("/var/lib/p.db")),
            ("SQLITE://rel.db", sqlite("rel.db")),
            ("sqlite:", Err(LocationError::EmptySqlitePath("sqlite:".into()))),
        ];
        for (text, expected) in cases {
            assert_eq!(&Location::parse(text), expected, "{text}");
        }
        for url in ["postgres://pairgate@db.internal/pairgate", "postgresql://h/d", "postgres:///local", "postgres:"] {
            assert!(matches!(Location::parse(url), Ok(Location::Postgres(_))), "{url}");
        }
        for (url, scheme) in [("mysql://root@h/db", "mysql"), ("file:///x.db", "file"), ("https://x/y", "https")] {
            match Location::parse(url) {
                Err(LocationError::UnknownScheme { scheme: found, .. }) => assert_eq!(found, scheme),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_password_is_never_shown() {
        let secret = "s3cret-Pw";
        for text in [
            format!("postgres://pairgate:{secret}@db.internal:5432/pairgate"),
            format!("postgresql://db.internal/pairgate?sslmode=require&password={secret}"),
            format!("postgres://pairgate:{secret}@[::1"),
        ] {
            let location = Location::parse(&text).unwrap();
            let shown =
                [location.to_string(), format!("{location:?}"), location.sqlite_path().unwrap_err().to_string()];
            for shown in shown {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
        let unknown = Location::parse(&format!("mysql://root:{secret}@h/db")).unwrap_err().to_string();
        assert!(!unknown.contains(secret) && unknown.contains("mysql://root:***@h/db"), "{unknown}");
        assert_eq!(redact_url("postgres://u:p@h/d"), "postgres://u:***@h/d");
        let has = |text: &str| matches!(Location::parse(text), Ok(Location::Postgres(url)) if url.has_password());
        assert!(has("postgres://u:p@h/d") && has("POSTGRES://h/d?sslmode=require&Password=x"));
        assert!(!has("postgres://u@h/d") && !has("postgres://h") && !has("POSTGRESQL://U@H/D?sslmode=require"));
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
    }
}
