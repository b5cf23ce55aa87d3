//! Where media live: a local directory (default) or an S3-compatible bucket, under storage keys
//! built by the server. Generation outputs, uploads, `/media` streaming, integrity checks and the
//! orphan sweep all go through `MediaStore`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use uuid::Uuid;

use crate::providers::Rendered;
use crate::repo::Repo;
use crate::s3::S3Store;

/// Where media live: a local directory (default) or an S3-compatible bucket, under keys built
/// here (`generations/<id>/<file>`, `uploads/<owner>/<id>.<ext>`), never from client input.
/// Uploads in progress are written to `<root>/tmp` in both cases.
#[derive(Debug, Clone)]
pub struct MediaStore {
    root: PathBuf,
    s3: Option<S3Store>,
}

/// A stored object's size and bytes.
pub type Object = (u64, BoxStream<'static, std::io::Result<axum::body::Bytes>>);

/// The file as a stream of 64 KiB chunks.
fn file_chunks(file: tokio::fs::File) -> BoxStream<'static, std::io::Result<axum::body::Bytes>> {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let read = tokio::io::AsyncReadExt::read(&mut file, &mut buffer).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.truncate(read);
        Ok(Some((axum::body::Bytes::from(buffer), file)))
    })
    .boxed()
}

impl MediaStore {
    /// Local storage under `root` (created if needed).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            s3: None,
        })
    }

    /// Keep objects in `s3` instead of the local directory.
    pub fn with_s3(mut self, s3: S3Store) -> Self {
        self.s3 = Some(s3);
        self
    }

    /// `local` or `s3`.
    pub fn backend(&self) -> &'static str {
        if self.s3.is_some() { "s3" } else { "local" }
    }

    /// The local file of a storage key, if the key is well-formed (no traversal).
    pub fn path_of(&self, key: &str) -> Option<PathBuf> {
        velro_engine::media_url::valid_storage_key(key).then(|| self.root.join(key))
    }

    fn checked(&self, key: &str) -> std::io::Result<PathBuf> {
        self.path_of(key)
            .ok_or_else(|| std::io::Error::other("invalid storage key"))
    }

    /// Write a generation's output; returns its storage key.
    pub async fn put(&self, generation: Uuid, rendered: &Rendered) -> std::io::Result<String> {
        let key = format!(
            "generations/{generation}/{}.{}",
            Uuid::now_v7(),
            rendered.extension
        );
        let path = self.checked(&key)?;
        if let Some(s3) = &self.s3 {
            s3.put(&key, rendered.bytes.clone(), rendered.content_type)
                .await
                .map_err(std::io::Error::other)?;
            return Ok(key);
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        // Write then rename, so a reader never sees half a file.
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, &rendered.bytes).await?;
        tokio::fs::rename(&partial, &path).await?;
        Ok(key)
    }

    /// The local root (temporary files; objects too unless S3 is configured).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A fresh temporary file under the root for an upload in progress.
    pub async fn temp_file(&self) -> std::io::Result<(PathBuf, tokio::fs::File)> {
        let dir = self.root.join("tmp");
        tokio::fs::create_dir_all(&dir).await?;
        let path = dir.join(format!("{}.partial", Uuid::now_v7()));
        let file = tokio::fs::File::create(&path).await?;
        Ok((path, file))
    }

    /// Store a finished temporary file at `key` (a rename locally, a PUT to S3).
    pub async fn commit(&self, temp: &Path, key: &str, content_type: &str) -> std::io::Result<()> {
        let path = self.checked(key)?;
        if let Some(s3) = &self.s3 {
            let bytes = tokio::fs::read(temp).await?;
            let stored = s3
                .put(key, bytes, content_type)
                .await
                .map_err(std::io::Error::other);
            let _ = tokio::fs::remove_file(temp).await;
            return stored;
        }
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(temp, &path).await
    }

    /// The object at `key`, streamed; `None` when it does not exist.
    pub async fn open(&self, key: &str) -> std::io::Result<Option<Object>> {
        let path = self.checked(key)?;
        if let Some(s3) = &self.s3 {
            return s3.get(key).await.map_err(std::io::Error::other);
        }
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata().await?.len();
        Ok(Some((size, file_chunks(file))))
    }

    /// SHA-256 (hex) and size of a stored object, read in chunks.
    pub async fn digest(&self, key: &str) -> std::io::Result<(String, u64)> {
        let Some((_, mut chunks)) = self.open(key).await? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such object",
            ));
        };
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            context.update(&chunk);
        }
        Ok((hex::encode(context.finish().as_ref()), size))
    }

    /// Remove objects no database record names and that are older than `min_age` (so uploads and
    /// generations in flight are left alone), and stale temporary files. Returns how many went.
    pub async fn sweep_orphans(&self, repo: &Repo, min_age: Duration) -> anyhow::Result<usize> {
        let mut removed = 0;
        if let Some(s3) = &self.s3 {
            for object in s3.list().await? {
                let old_enough = chrono::DateTime::parse_from_rfc3339(&object.last_modified)
                    .ok()
                    .and_then(|t| {
                        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                            .to_std()
                            .ok()
                    })
                    .is_some_and(|age| age >= min_age);
                if old_enough
                    && velro_engine::media_url::valid_storage_key(&object.key)
                    && !repo.key_known(&object.key).await?
                {
                    s3.delete(&object.key).await?;
                    tracing::info!(key = %object.key, "orphaned media object removed");
                    removed += 1;
                }
            }
        }
        let mut folders = vec![self.root.clone()];
        while let Some(folder) = folders.pop() {
            let mut entries = match tokio::fs::read_dir(&folder).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = entries.next_entry().await? {
                let meta = entry.metadata().await?;
                if meta.is_dir() {
                    folders.push(entry.path());
                    continue;
                }
                let old_enough = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age >= min_age);
                if !old_enough {
                    continue;
                }
                let Ok(relative) = entry.path().strip_prefix(&self.root).map(Path::to_path_buf)
                else {
                    continue;
                };
                let key = relative.to_string_lossy().replace('\\', "/");
                let partial = key.starts_with("tmp/");
                // With S3, the local root holds temporary files only.
                if partial || self.s3.is_none() && !repo.key_known(&key).await? {
                    tokio::fs::remove_file(entry.path()).await?;
                    tracing::info!(key = %key, "orphaned media file removed");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Remove stored objects (best effort; a leftover is unreachable without its row, and the
    /// sweep collects it).
    pub async fn remove(&self, keys: &[String]) {
        for key in keys {
            let result = match (&self.s3, self.path_of(key)) {
                (Some(s3), Some(_)) => s3.delete(key).await.map_err(std::io::Error::other),
                (None, Some(path)) => tokio::fs::remove_file(&path).await,
                (_, None) => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(key = %key, error = %e, "could not remove a media object");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = MediaStore::new(dir.path()).unwrap();
        assert!(store.path_of("generations/x/y.png").is_some());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "a//b",
            "a\\b",
            "%2e%2e/x",
        ] {
            assert!(store.path_of(bad).is_none(), "{bad}");
        }
    }
}
