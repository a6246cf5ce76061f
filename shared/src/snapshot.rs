//! A cached, read-only view of every hook and the sources catalogue, so dispatch makes no store
//! read per event (spec §9). It is reloaded when older than its maximum age, at once after
//! [`SnapshotCache::invalidate`] (which the local server calls on every change made through its
//! admin API), or when [`SnapshotCache::refresh_if_changed`] finds the store's change counter
//! moved (the dispatch function, once per batch: read-your-writes, spec §10).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::model::Hook;
use crate::sources::Catalogue;
use crate::store::{HookFilter, HookStore, StoreError};

/// Page size used to read every hook.
const LOAD_PAGE: usize = 1000;

/// Every hook, indexed for matching, and the catalogue, as of one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    by_source: HashMap<String, Vec<Arc<Hook>>>,
    by_id: HashMap<Uuid, Arc<Hook>>,
    pub catalogue: Catalogue,
}

impl Snapshot {
    pub fn new(hooks: Vec<Hook>, catalogue: Catalogue) -> Snapshot {
        let mut snapshot = Snapshot {
            catalogue,
            ..Snapshot::default()
        };
        for hook in hooks {
            let hook = Arc::new(hook);
            snapshot
                .by_source
                .entry(hook.source.clone())
                .or_default()
                .push(hook.clone());
            snapshot.by_id.insert(hook.id, hook);
        }
        snapshot
    }

    /// The hooks of one source, enabled or not.
    pub fn hooks_of(&self, source: &str) -> &[Arc<Hook>] {
        self.by_source.get(source).map_or(&[], Vec::as_slice)
    }

    pub fn hook(&self, id: Uuid) -> Option<&Arc<Hook>> {
        self.by_id.get(&id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

struct Loaded {
    snapshot: Arc<Snapshot>,
    at: Instant,
    /// The store's change counter, read just before the load.
    version: u64,
}

/// Keeps a [`Snapshot`] no older than `max_age`.
pub struct SnapshotCache {
    store: Arc<dyn HookStore>,
    max_age: Duration,
    current: RwLock<Option<Loaded>>,
    stale: AtomicBool,
    /// One reload at a time; others wait for it rather than hitting the store too.
    reloading: tokio::sync::Mutex<()>,
}

impl SnapshotCache {
    pub fn new(store: Arc<dyn HookStore>, max_age: Duration) -> SnapshotCache {
        SnapshotCache {
            store,
            max_age,
            current: RwLock::new(None),
            stale: AtomicBool::new(true),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Marks the snapshot out of date; the next [`SnapshotCache::get`] reloads it.
    pub fn invalidate(&self) {
        self.stale.store(true, Ordering::Release);
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        if self.stale.load(Ordering::Acquire) {
            return None;
        }
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|loaded| loaded.at.elapsed() < self.max_age)
            .map(|loaded| loaded.snapshot.clone())
    }

    /// The current snapshot, reloaded first when too old or invalidated.
    pub async fn get(&self) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _guard = self.reloading.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        // Cleared before reading, so a change made during the load marks it stale again.
        self.stale.store(false, Ordering::Release);
        let at = Instant::now();
        let loaded = async {
            // The counter first: a change landing during the load makes the next check reload.
            let version = self.store.version().await?;
            Ok::<_, StoreError>((version, self.load().await?))
        };
        let (version, snapshot) = match loaded.await {
            Ok((version, snapshot)) => (version, Arc::new(snapshot)),
            Err(err) => {
                self.stale.store(true, Ordering::Release);
                return Err(err);
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
            snapshot: snapshot.clone(),
            at,
            version,
        });
        Ok(snapshot)
    }

    /// Read-your-writes (spec §10): reads the store's change counter and, when it moved since the
    /// snapshot was loaded, marks the snapshot stale, so the next [`SnapshotCache::get`] sees
    /// every change whose write returned before this call. Returns whether it did. The dispatch
    /// function calls it once per batch; a failure to read the counter marks it stale as well.
    pub async fn refresh_if_changed(&self) -> Result<bool, StoreError> {
        let loaded = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            current.as_ref().map(|loaded| loaded.version)
        };
        let Some(loaded) = loaded else {
            return Ok(false);
        };
        match self.store.version().await {
            Ok(now) if now == loaded => Ok(false),
            Ok(_) => {
                self.invalidate();
                Ok(true)
            }
            Err(err) => {
                self.invalidate();
                Err(err)
            }
        }
    }

    async fn load(&self) -> Result<Snapshot, StoreError> {
        let mut hooks = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .list(&HookFilter::default(), LOAD_PAGE, after)
                .await?;
            hooks.extend(page.items);
            match page.next {
                Some(token) => after = Some(token),
                None => break,
            }
        }
        let custom = self.store.list_custom_events().await?;
        Ok(Snapshot::new(hooks, Catalogue::with_custom(&custom)))
    }
}
