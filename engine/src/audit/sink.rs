//! Where audit lines go: a file per PDP instance (default), standard output, or the database's
//! append-only `audit_records` table. Each sink can tell where its chain stands so a restarted PDP
//! continues it, and never leaves half a batch behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sqlx::Row;

use super::ChainHead;
use crate::db::{Database, db_error};
use crate::error::{Error, Result};

/// Where the audit log is written.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// `file:<dir>`: the file `<dir>/audit-<instance>.jsonl`.
    File {
        /// Folder of audit files.
        dir: PathBuf,
        /// This PDP's name; one chain (file) per instance.
        instance: String,
    },
    /// `stdout`: one line per record on standard output (a log shipper keeps them).
    Stdout,
    /// `postgres` (or `database`): the `audit_records` table of the engine's database.
    Database {
        /// The database.
        db: Database,
        /// This PDP's name; one chain per instance.
        instance: String,
    },
}

impl SinkConfig {
    /// Parse `file:<dir>`, `stdout`, `postgres` or `database`. The database sinks need `db`.
    pub fn parse(text: &str, instance: &str, db: Option<&Database>) -> Result<Self> {
        if let Some(dir) = text.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(Error::Config("`file:` audit sink needs a folder".into()));
            }
            return Ok(Self::File {
                dir: PathBuf::from(dir),
                instance: instance.to_owned(),
            });
        }
        match text {
            "stdout" => Ok(Self::Stdout),
            "postgres" | "database" => db
                .map(|db| Self::Database {
                    db: db.clone(),
                    instance: instance.to_owned(),
                })
                .ok_or_else(|| Error::Config("the database audit sink needs a database".into())),
            other => Err(Error::Config(format!(
                "unknown audit sink `{other}` (use file:<dir>, stdout or postgres)"
            ))),
        }
    }
}

/// An open sink.
#[derive(Debug)]
pub enum AuditSink {
    /// An audit file.
    File {
        /// Its path.
        path: PathBuf,
        /// The open file, shared with blocking writes.
        file: Arc<Mutex<File>>,
    },
    /// Standard output (the chain restarts with each process).
    Stdout,
    /// The `audit_records` table.
    Database {
        /// The database.
        db: Database,
        /// Chain name.
        instance: String,
    },
}

/// The path of an instance's audit file in `dir`.
pub fn file_path(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("audit-{instance}.jsonl"))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl AuditSink {
    /// Open (creating the file or folder if needed).
    pub async fn open(config: &SinkConfig) -> Result<Self> {
        match config {
            SinkConfig::File { dir, instance } => {
                if instance.is_empty()
                    || !instance
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(Error::Config(format!(
                        "invalid audit instance name `{instance}`"
                    )));
                }
                std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                let path = file_path(dir, instance);
                let file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                Ok(Self::File {
                    path,
                    file: Arc::new(Mutex::new(file)),
                })
            }
            SinkConfig::Stdout => Ok(Self::Stdout),
            SinkConfig::Database { db, instance } => Ok(Self::Database {
                db: db.clone(),
                instance: instance.clone(),
            }),
        }
    }

    /// Where the chain stands, read back from what was written before.
    pub async fn head(&mut self) -> Result<ChainHead> {
        match self {
            Self::File { path, file } => {
                let last = {
                    let mut file = file
                        .lock()
                        .map_err(|_| Error::Audit("audit file lock poisoned".into()))?;
                    last_line(&mut file).map_err(|e| io(path, e))?
                };
                match last {
                    None => Ok(ChainHead::default()),
                    Some(line) => ChainHead::from_line(&line).map_err(|e| {
                        Error::Audit(format!(
                            "the last record of {} is damaged ({e}); run `velro-pdp audit verify` before starting",
                            path.display()
                        ))
                    }),
                }
            }
            Self::Stdout => Ok(ChainHead::default()),
            Self::Database { db, instance } => {
                let row = sqlx::query(
                    "SELECT line FROM audit_records WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(instance.as_str())
                .fetch_optional(db.pool())
                .await
                .map_err(db_error)?;
                match row {
                    None => Ok(ChainHead::default()),
                    Some(row) => {
                        let line: String = row.try_get(0).map_err(db_error)?;
                        ChainHead::from_line(&line)
                    }
                }
            }
        }
    }

    /// Write lines (with their sequence numbers) all or nothing; `durable` also syncs.
    pub async fn write(&mut self, lines: &[(i64, String)], durable: bool) -> Result<()> {
        match self {
            Self::File { path, file } => {
                let file = Arc::clone(file);
                let path = path.clone();
                let mut buffer =
                    String::with_capacity(lines.iter().map(|(_, l)| l.len() + 1).sum());
                for (_, line) in lines {
                    buffer.push_str(line);
                    buffer.push('\n');
                }
                tokio::task::spawn_blocking(move || {
                    let mut file = file
                        .lock()
                        .map_err(|_| Error::Audit("audit file lock poisoned".into()))?;
                    let before = file.metadata().map_err(|e| io(&path, e))?.len();
                    let written = file
                        .write_all(buffer.as_bytes())
                        .and_then(|()| file.flush())
                        .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
                    if let Err(e) = written {
                        // Leave no torn line behind: the chain continues from `before`.
                        let _ = file.set_len(before);
                        return Err(io(&path, e));
                    }
                    Ok(())
                })
                .await
                .map_err(|e| Error::Audit(format!("audit write task failed: {e}")))?
            }
            Self::Stdout => {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                for (_, line) in lines {
                    writeln!(out, "{line}").map_err(|e| Error::Audit(e.to_string()))?;
                }
                out.flush().map_err(|e| Error::Audit(e.to_string()))
            }
            Self::Database { db, instance } => {
                let mut tx = db.pool().begin().await.map_err(db_error)?;
                for (seq, line) in lines {
                    sqlx::query(
                        "INSERT INTO audit_records (instance, seq, line) VALUES ($1, $2, $3)",
                    )
                    .bind(instance.as_str())
                    .bind(*seq)
                    .bind(line.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)
            }
        }
    }

    /// Flush and sync before exit.
    pub async fn close(&mut self) -> Result<()> {
        if let Self::File { path, file } = self {
            let file = file
                .lock()
                .map_err(|_| Error::Audit("audit file lock poisoned".into()))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        Ok(())
    }
}

/// The last non-empty line of a file, reading only its tail.
fn last_line(file: &mut File) -> std::io::Result<Option<String>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    // Records are well under 64 KiB; read at most that much from the end.
    let window = len.min(64 * 1024);
    file.seek(SeekFrom::Start(len - window))?;
    let mut tail = Vec::with_capacity(usize::try_from(window).unwrap_or(0));
    file.read_to_end(&mut tail)?;
    let text = String::from_utf8_lossy(&tail);
    Ok(text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned))
}

/// Read every line of a database chain, in order (for `verify`).
pub async fn database_lines(db: &Database, instance: &str) -> Result<Vec<String>> {
    let rows = sqlx::query("SELECT line FROM audit_records WHERE instance = $1 ORDER BY seq")
        .bind(instance)
        .fetch_all(db.pool())
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).map_err(db_error))
        .collect()
}
