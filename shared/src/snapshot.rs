//! A cached, read-only view of every hook and the sources catalogue, so dispatch makes no store
//! read per event (spec §9). It is reloaded when older than its maximum age, at once after
//! [`SnapshotCache::invalidate`] (which the local server calls on every change made through its
//! admin API), or when [`SnapshotCache::refresh_if_changed`] finds the store's change counter
//! moved (the dispatch function, once per batch: read-your-writes, spec §10). A cache made
//! [`SnapshotCache::checking_counter_every`] asks the counter itself once its snapshot has gone
//! unconfirmed that long, and reloads only when the counter moved (the admin function: one small
//! consistent read instead of reading every hook again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// When the snapshot was last known current: its load, or the last read of the change
    /// counter that found it unmoved.
    confirmed: Instant,
    /// The cache's invalidation count when this load started: the snapshot holds every change
    /// invalidated before then, and is stale as soon as the count moves on.
    generation: u64,
    /// The store's change counter, read just before the load.
    version: u64,
}

/// Keeps a [`Snapshot`] no older than `max_age`.
pub struct SnapshotCache {
    store: Arc<dyn HookStore>,
    max_age: Duration,
    /// With [`SnapshotCache::checking_counter_every`]: how long a snapshot is used before the
    /// change counter is asked again.
    check_every: Option<Duration>,
    current: RwLock<Option<Loaded>>,
    /// Bumped by every [`SnapshotCache::invalidate`]. A count, not a flag: a flag cleared when a
    /// reload starts would make the previous snapshot look fresh to readers while that reload
    /// runs, so an event accepted after a change's 2xx could still see the hook before it.
    generation: AtomicU64,
    /// One reload at a time; others wait for it rather than hitting the store too.
    reloading: tokio::sync::Mutex<()>,
}

impl SnapshotCache {
    pub fn new(store: Arc<dyn HookStore>, max_age: Duration) -> SnapshotCache {
        SnapshotCache {
            store,
            max_age,
            check_every: None,
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// This cache, asking the store's change counter whenever its snapshot has gone `interval`
    /// without being confirmed, and reloading only when the counter moved; `max_age` stays the
    /// longest a snapshot is kept whatever the counter says.
    pub fn checking_counter_every(mut self, interval: Duration) -> SnapshotCache {
        self.check_every = Some(interval);
        self
    }

    /// Marks the snapshot out of date; the next [`SnapshotCache::get`] reloads it.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::Acquire);
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|loaded| loaded.generation == generation && loaded.at.elapsed() < self.max_age)
            .filter(|loaded| {
                self.check_every
                    .is_none_or(|interval| loaded.confirmed.elapsed() < interval)
            })
            .map(|loaded| loaded.snapshot.clone())
    }

    /// With a counter check: the snapshot, confirmed current when the change counter has not
    /// moved since it was loaded; `None` when it must be loaded again. The caller holds the
    /// reload lock.
    async fn confirmed(&self) -> Result<Option<Arc<Snapshot>>, StoreError> {
        if self.check_every.is_none() {
            return Ok(None);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let candidate = {
            let current = self.current.read().unwrap_or_else(|p| p.into_inner());
            current
                .as_ref()
                .filter(|loaded| {
                    loaded.generation == generation && loaded.at.elapsed() < self.max_age
                })
                .map(|loaded| loaded.version)
        };
        let Some(version) = candidate else {
            return Ok(None);
        };
        let asked = Instant::now();
        if self.store.version().await? != version {
            return Ok(None);
        }
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        Ok(current
            .as_mut()
            // Still the snapshot the counter was compared with, and not invalidated meanwhile.
            .filter(|loaded| loaded.version == version)
            .filter(|_| self.generation.load(Ordering::Acquire) == generation)
            .map(|loaded| {
                loaded.confirmed = asked;
                loaded.snapshot.clone()
            }))
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
        if let Some(snapshot) = self.confirmed().await? {
            return Ok(snapshot);
        }
        // Taken before reading, so a change invalidated during the load makes it stale at once.
        let generation = self.generation.load(Ordering::Acquire);
        let at = Instant::now();
        let loaded = async {
            // The counter first: a change landing during the load makes the next check reload.
            let version = self.store.version().await?;
            Ok::<_, StoreError>((version, self.load().await?))
        };
        let (version, snapshot) = match loaded.await {
            Ok((version, snapshot)) => (version, Arc::new(snapshot)),
            Err(err) => return Err(err),
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
            snapshot: snapshot.clone(),
            at,
            confirmed: at,
            generation,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CustomEvent, Versioned};
    use crate::sqlite::Database;
    use crate::store::sqlite::SqliteHookStore;
    use crate::store::{Page, PageToken, Precondition};
    use async_trait::async_trait;
    use tokio::sync::{Notify, Semaphore};

    /// The SQLite store, whose `list` waits for a permit once `gated`: a reload held in flight.
    struct Gated {
        inner: SqliteHookStore,
        gated: std::sync::atomic::AtomicBool,
        permits: Semaphore,
        entered: Notify,
    }

    #[async_trait]
    impl HookStore for Gated {
        async fn get(&self, id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError> {
            self.inner.get(id).await
        }
        async fn list(
            &self,
            filter: &HookFilter,
            size: usize,
            after: Option<PageToken>,
        ) -> Result<Page<Hook>, StoreError> {
            if self.gated.load(Ordering::Acquire) {
                self.entered.notify_one();
                self.permits.acquire().await.expect("open").forget();
            }
            self.inner.list(filter, size, after).await
        }
        async fn put(&self, hook: &Hook, precondition: Precondition) -> Result<u64, StoreError> {
            self.inner.put(hook, precondition).await
        }
        async fn delete(&self, id: Uuid) -> Result<Option<Hook>, StoreError> {
            self.inner.delete(id).await
        }
        async fn put_custom_event(&self, event: &CustomEvent) -> Result<bool, StoreError> {
            self.inner.put_custom_event(event).await
        }
        async fn delete_custom_event(&self, source: &str, event: &str) -> Result<bool, StoreError> {
            self.inner.delete_custom_event(source, event).await
        }
        async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError> {
            self.inner.list_custom_events().await
        }
        async fn version(&self) -> Result<u64, StoreError> {
            self.inner.version().await
        }
    }

    /// The SQLite store, counting full reads (`list`) and counter reads (`version`).
    struct Counting {
        inner: SqliteHookStore,
        lists: AtomicU64,
        versions: AtomicU64,
    }

    #[async_trait]
    impl HookStore for Counting {
        async fn get(&self, id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError> {
            self.inner.get(id).await
        }
        async fn list(
            &self,
            filter: &HookFilter,
            size: usize,
            after: Option<PageToken>,
        ) -> Result<Page<Hook>, StoreError> {
            self.lists.fetch_add(1, Ordering::Relaxed);
            self.inner.list(filter, size, after).await
        }
        async fn put(&self, hook: &Hook, precondition: Precondition) -> Result<u64, StoreError> {
            self.inner.put(hook, precondition).await
        }
        async fn delete(&self, id: Uuid) -> Result<Option<Hook>, StoreError> {
            self.inner.delete(id).await
        }
        async fn put_custom_event(&self, event: &CustomEvent) -> Result<bool, StoreError> {
            self.inner.put_custom_event(event).await
        }
        async fn delete_custom_event(&self, source: &str, event: &str) -> Result<bool, StoreError> {
            self.inner.delete_custom_event(source, event).await
        }
        async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError> {
            self.inner.list_custom_events().await
        }
        async fn version(&self) -> Result<u64, StoreError> {
            self.versions.fetch_add(1, Ordering::Relaxed);
            self.inner.version().await
        }
    }

    #[tokio::test]
    async fn a_counter_checked_cache_reloads_only_when_the_counter_moved() {
        // Given a cache asking the change counter every 20 ms (the admin function's setup)...
        let store = Arc::new(Counting {
            inner: SqliteHookStore::new(Database::in_memory().unwrap())
                .await
                .unwrap(),
            lists: AtomicU64::new(0),
            versions: AtomicU64::new(0),
        });
        let cache = SnapshotCache::new(store.clone(), Duration::from_secs(300))
            .checking_counter_every(Duration::from_millis(20));
        let lists = || store.lists.load(Ordering::Relaxed);
        assert!(cache.get().await.unwrap().is_empty());
        assert_eq!(lists(), 1);

        // ...when nothing changes, later reads ask the counter, never every hook again...
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(30)).await;
            cache.get().await.unwrap();
        }
        assert_eq!(lists(), 1, "the hooks were read again with no change");
        assert!(store.versions.load(Ordering::Relaxed) >= 4);
        // ...and within the interval, not even the counter.
        let asked = store.versions.load(Ordering::Relaxed);
        cache.get().await.unwrap();
        assert_eq!(store.versions.load(Ordering::Relaxed), asked);

        // When a hook is written (through another instance: no invalidation here), the next
        // read past the interval sees it.
        let hook = Hook::log_on("crud");
        store.put(&hook, Precondition::Absent).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let snapshot = cache.get().await.unwrap();
        assert!(snapshot.hook(hook.id).is_some(), "the new hook is not seen");
        assert_eq!(lists(), 2);
    }

    #[tokio::test]
    async fn a_reader_during_a_reload_never_gets_the_snapshot_from_before_an_invalidation() {
        let store = Arc::new(Gated {
            inner: SqliteHookStore::new(Database::in_memory().unwrap())
                .await
                .unwrap(),
            gated: false.into(),
            permits: Semaphore::new(0),
            entered: Notify::new(),
        });
        let cache = Arc::new(SnapshotCache::new(store.clone(), Duration::from_secs(300)));
        let before = cache.get().await.unwrap();
        assert!(before.catalogue.event("shop", "order").is_none());

        // A change, then its invalidation (what the admin API does before its 2xx).
        let order = CustomEvent {
            source: "shop".into(),
            event: "order".into(),
            fields: vec!["id".into()],
            unique: None,
            description: None,
        };
        store.put_custom_event(&order).await.unwrap();
        cache.invalidate();

        // One reader starts the reload and is held inside it...
        store.gated.store(true, Ordering::Release);
        let reloading = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get().await.unwrap() }
        });
        store.entered.notified().await;
        // ...while another reader asks for the hooks (an event accepted after the 2xx).
        let reader = tokio::spawn({
            let cache = cache.clone();
            async move { cache.get().await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.permits.add_permits(1);

        let seen = reader.await.unwrap();
        assert!(
            seen.catalogue.event("shop", "order").is_some(),
            "a reader during the reload got the snapshot from before the change"
        );
        assert!(reloading
            .await
            .unwrap()
            .catalogue
            .event("shop", "order")
            .is_some());
    }
}
