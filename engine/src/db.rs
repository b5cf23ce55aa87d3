//! The SQL database (L3): one pool over SQLite or PostgreSQL through sqlx's `Any` driver, so that
//! one implementation serves both dialects and only SQL text differs (DESIGN §9). Migrations are
//! embedded at compile time and applied on connect.
//!
//! Shared conventions (see the migrations): ids are UUID text, times epoch milliseconds, flags
//! are BOOLEAN in PostgreSQL and INTEGER 0/1 in SQLite (decode them with [`Flag`]), placeholders
//! are `$1, $2, …` in both (SQLite reads `$N` by number). This module owns connecting, migrating and
//! health; the queries live with their owners.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyTypeInfo, AnyTypeInfoKind};
use sqlx::{Any, AnyPool, Decode, Type};

use crate::error::{Error, Result};

/// Which SQL dialect a database speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (embedded mode).
    Sqlite,
    /// PostgreSQL (distributed mode).
    Postgres,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// `sqlite://path/to/file.db` or `postgres://…`.
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long to wait for a connection before failing a query.
    pub acquire_timeout: Duration,
}

impl DbConfig {
    /// Defaults for `url`: 8 connections (16 for PostgreSQL), 2 s acquire timeout.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let max_connections = if url.starts_with("postgres") { 16 } else { 8 };
        Self {
            url,
            max_connections,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

/// A migrated database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
    /// The URL as connected (may hold a password; never logged).
    url: String,
    /// The URL for logs.
    display_url: String,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Database {
    /// Connect, create the SQLite file (and its folder) if needed, and apply pending migrations.
    pub async fn connect(config: &DbConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = prepare_url(&config.url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(&url)
            .await
            .map_err(|e| Error::Database(format!("cannot connect to {}: {e}", redact(&url))))?;
        let db = Self {
            pool,
            dialect,
            display_url: redact(&url),
            url,
        };
        if dialect == Dialect::Sqlite {
            // WAL lets readers (decisions) proceed while a writer (the API) holds the lock; the
            // setting is stored in the database file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&db.pool)
                .await
                .map_err(db_error)?;
        }
        db.migrate().await?;
        Ok(db)
    }

    /// Apply pending migrations; idempotent.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| Error::Database(format!("migrations failed: {e}")))
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL without credentials, for logs.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The URL as connected, for companion connections (LISTEN). Never log it.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db_error)
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The dialect of a URL, and the URL as the driver needs it: SQLite URLs get `mode=rwc` (create the
/// file) and their folder is created.
fn prepare_url(url: &str) -> Result<(Dialect, String)> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(Error::Config(
                "an in-memory SQLite database cannot be shared by the pool; name a file".into(),
            ));
        }
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let url = if rest.contains("mode=") {
            format!("sqlite://{rest}")
        } else if rest.contains('?') {
            format!("sqlite://{rest}&mode=rwc")
        } else {
            format!("sqlite://{rest}?mode=rwc")
        };
        return Ok((Dialect::Sqlite, url));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Dialect::Postgres, url.to_owned()));
    }
    Err(Error::Config(format!(
        "database URL must start with sqlite:// or postgres://, got `{}`",
        redact(url)
    )))
}

/// A URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A database error, with the driver's message (never shown to callers; see `Error`).
pub(crate) fn db_error(e: sqlx::Error) -> Error {
    Error::Database(e.to_string())
}

/// A boolean column: BOOLEAN in PostgreSQL, INTEGER 0/1 in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl Type<Any> for Flag {
    fn type_info() -> AnyTypeInfo {
        <bool as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        matches!(ty.kind(), AnyTypeInfoKind::Bool) || ty.kind().is_integer()
    }
}

impl<'r> Decode<'r, Any> for Flag {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <bool as Decode<Any>>::decode(value.clone()) {
            Ok(b) => Ok(Self(b)),
            Err(_) => <i64 as Decode<Any>>::decode(value).map(|i| Self(i != 0)),
        }
    }
}

/// Parse a text column into a closed-set enum, failing (closed) on values the code does not know.
pub(crate) fn parse_column<T: FromStr>(column: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| Error::Database(format!("unexpected value in column `{column}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified_and_sqlite_files_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nested/velro.db");
        let (dialect, url) = prepare_url(&format!("sqlite://{}", file.display())).unwrap();
        assert_eq!(dialect, Dialect::Sqlite);
        assert!(url.ends_with("velro.db?mode=rwc"), "{url}");
        assert!(file.parent().unwrap().is_dir());
        assert_eq!(
            prepare_url("postgres://u:p@h/db").unwrap().0,
            Dialect::Postgres
        );
        assert!(prepare_url("mysql://x").is_err());
        assert!(prepare_url("sqlite::memory:").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("sqlite://./data/velro.db"),
            "sqlite://./data/velro.db"
        );
    }
}
