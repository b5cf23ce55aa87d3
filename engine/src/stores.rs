//! Every policy store under a policies root, swapped atomically on change (DESIGN §5).
//!
//! `PolicyStores` is a cheap `Clone` handle. Readers take the current `Arc<PolicyStore>` without
//! locking (`ArcSwap`). A reload reads every store folder, skips those whose content hash did not
//! change, validates the rest and swaps only valid versions in; an invalid version keeps the last
//! good one answering and is recorded as the store's `last_error`. `watch` drives reloads from
//! file-system events (notify). This module does not evaluate requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::policy_store::{Diagnostic, PolicyStore, SCHEMA_FILE, StoreSources, store_name_of};

/// How long the watcher waits for a burst of file events to settle before reloading.
const SETTLE: Duration = Duration::from_millis(50);

/// Why the latest attempt to load a store version failed.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// When the attempt was made.
    #[serde(with = "unix_millis")]
    pub at: SystemTime,
    /// Content hash of the rejected files, when they could be read.
    pub version: Option<String>,
    /// One-paragraph summary.
    pub message: String,
    /// Located problems, when validation found them.
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadFailure {
    fn new(version: Option<String>, error: &Error) -> Self {
        let diagnostics = match error {
            Error::InvalidStore { diagnostics, .. } => diagnostics.clone(),
            _ => Vec::new(),
        };
        Self {
            at: SystemTime::now(),
            version,
            message: error.to_string(),
            diagnostics,
        }
    }
}

/// A store's current good version and its latest load failure, if newer than that version.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    /// The version answering requests; `None` if no version of the store ever loaded.
    pub current: Option<Arc<PolicyStore>>,
    /// The latest failed load since `current` was loaded.
    pub last_error: Option<Arc<LoadFailure>>,
}

/// What one reload did, store by store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// Stores whose new version was validated and swapped in (name, version).
    pub applied: Vec<(String, String)>,
    /// Stores whose files did not change.
    pub unchanged: Vec<String>,
    /// Stores whose new version was rejected; the previous version keeps answering.
    pub rejected: Vec<(String, String)>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    stores: ArcSwap<BTreeMap<String, StoreStatus>>,
    /// Serializes reloads so two never interleave their swaps.
    reload_lock: Mutex<()>,
    reloads_applied: AtomicU64,
    reloads_rejected: AtomicU64,
    /// Counts finished reloads, so callers can await the next one.
    reloaded: tokio::sync::watch::Sender<u64>,
}

/// All policy stores under one root folder.
#[derive(Debug, Clone)]
pub struct PolicyStores {
    inner: Arc<Inner>,
}

impl PolicyStores {
    /// Load every store under `root` (each sub-folder holding a `schema.cedarschema`). Fails if
    /// the root has no store or any store is invalid: a service should not start half-configured.
    pub fn open(root: &Path) -> Result<Self> {
        let stores = Self {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                stores: ArcSwap::from_pointee(BTreeMap::new()),
                reload_lock: Mutex::new(()),
                reloads_applied: AtomicU64::new(0),
                reloads_rejected: AtomicU64::new(0),
                reloaded: tokio::sync::watch::Sender::new(0),
            }),
        };
        let report = stores.reload();
        if let Some((name, _)) = report.rejected.first() {
            let error = stores
                .status(name)
                .and_then(|s| s.last_error)
                .map(|e| e.message.clone())
                .unwrap_or_default();
            return Err(Error::InvalidStore {
                store: name.clone(),
                diagnostics: vec![Diagnostic::at(".", "", None, error)],
            });
        }
        if report.applied.is_empty() {
            return Err(Error::InvalidStore {
                store: store_name_of(root),
                diagnostics: vec![Diagnostic::at(
                    ".",
                    "",
                    None,
                    format!(
                        "no policy store under `{}` (a store is a folder holding `{SCHEMA_FILE}`)",
                        root.display()
                    ),
                )],
            });
        }
        Ok(stores)
    }

    /// The policies root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The version of store `name` answering requests now.
    pub fn get(&self, name: &str) -> Result<Arc<PolicyStore>> {
        self.inner
            .stores
            .load()
            .get(name)
            .and_then(|s| s.current.clone())
            .ok_or_else(|| Error::UnknownStore(name.to_owned()))
    }

    /// Store `name`'s current version and latest failure.
    pub fn status(&self, name: &str) -> Option<StoreStatus> {
        self.inner.stores.load().get(name).cloned()
    }

    /// Every store's status, by name.
    pub fn statuses(&self) -> BTreeMap<String, StoreStatus> {
        self.inner.stores.load().as_ref().clone()
    }

    /// Number of reloads that swapped in a new version, and that were rejected, since start.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.inner.reloads_applied.load(Ordering::Relaxed),
            self.inner.reloads_rejected.load(Ordering::Relaxed),
        )
    }

    /// Re-read every store folder and swap in each valid changed version.
    pub fn reload(&self) -> ReloadReport {
        // A poisoned lock only means an earlier reload panicked; the map itself is never partial.
        let _guard = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = self.inner.stores.load().as_ref().clone();
        let mut report = ReloadReport::default();
        for dir in store_dirs(&self.inner.root) {
            let name = store_name_of(&dir);
            let previous = next.get(&name).and_then(|s| s.current.clone());
            let outcome = load_changed(&dir, &name, previous.as_deref());
            match outcome {
                Ok(None) => {
                    // Files unchanged: a fresh error from a transient bad edit is obsolete.
                    if let Some(status) = next.get_mut(&name) {
                        status.last_error = None;
                    }
                    report.unchanged.push(name);
                }
                Ok(Some(store)) => {
                    tracing::info!(
                        store = %name,
                        policy.version = %store.version(),
                        policy.count = store.policy_info().count(),
                        "policy store loaded"
                    );
                    report
                        .applied
                        .push((name.clone(), store.version().to_owned()));
                    next.insert(
                        name,
                        StoreStatus {
                            current: Some(store),
                            last_error: None,
                        },
                    );
                    self.inner.reloads_applied.fetch_add(1, Ordering::Relaxed);
                }
                Err((version, error)) => {
                    let failure = LoadFailure::new(version, &error);
                    tracing::error!(
                        store = %name,
                        error = %failure.message,
                        "policy store rejected; the previous version keeps answering"
                    );
                    report
                        .rejected
                        .push((name.clone(), failure.message.clone()));
                    let status = next.entry(name).or_insert(StoreStatus {
                        current: None,
                        last_error: None,
                    });
                    status.last_error = Some(Arc::new(failure));
                    self.inner.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.inner.stores.store(Arc::new(next));
        self.inner.reloaded.send_modify(|n| *n += 1);
        report
    }

    /// A receiver that changes after every finished reload (however it was triggered).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.reloaded.subscribe()
    }

    /// Watch the policies root and reload on every change. Reloading stops when the returned
    /// watcher is dropped.
    pub fn watch(&self) -> Result<StoreWatcher> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // The receiver is gone only when the watcher is being dropped.
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.inner.root, RecursiveMode::Recursive)?;
        let stores = self.clone();
        std::thread::Builder::new()
            .name("velro-policy-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Let a burst of events (an editor's write, rename, chmod) settle.
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    stores.reload();
                }
            })
            .map_err(|source| Error::Io {
                path: self.inner.root.clone(),
                source,
            })?;
        tracing::info!(root = %self.inner.root.display(), "watching policy stores");
        Ok(StoreWatcher { _watcher: watcher })
    }
}

/// Keeps the policies root watched while alive.
pub struct StoreWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for StoreWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWatcher").finish_non_exhaustive()
    }
}

/// Sub-folders of `root` that hold a schema, sorted. `root` itself counts when it holds one.
pub fn store_dirs(root: &Path) -> Vec<PathBuf> {
    if root.join(SCHEMA_FILE).is_file() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(SCHEMA_FILE).is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Build the store in `dir` unless its files hash to `previous`'s version. `Ok(None)`: unchanged.
/// On failure, the version of the rejected files (when they could be read) and the error.
fn load_changed(
    dir: &Path,
    name: &str,
    previous: Option<&PolicyStore>,
) -> std::result::Result<Option<Arc<PolicyStore>>, (Option<String>, Error)> {
    let sources = StoreSources::read(dir).map_err(|e| (None, e))?;
    let version = sources.version();
    if previous.is_some_and(|p| p.version() == version) {
        return Ok(None);
    }
    match previous {
        Some(previous) => previous.rebuild(sources),
        None => PolicyStore::build(name, sources),
    }
    .map(|store| Some(Arc::new(store)))
    .map_err(|e| (Some(version), e))
}

mod unix_millis {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        s.serialize_u128(ms)
    }
}
