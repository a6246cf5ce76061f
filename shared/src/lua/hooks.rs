//! Each hook's user code kept apart from the other hooks' (spec §6), on the process's
//! [`LuaPool`].
//!
//! A hook's Lua runs on at most one pool thread at a time (its *lane*), so a hostile hook holds
//! one thread at worst and other hooks keep the rest. Its compiled code (a lambda chain, parsed
//! templates) is cached per hook: bounded in entries and in Lua memory (least recently used out
//! first), replaced when the hook changes and dropped by [`HookLua::forget`] when it goes. No
//! lock is held while anything compiles: callers compile on the pool, then [`HookLua::remember`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::pool::{LuaPool, PoolError};

/// Entries the compiled-code cache keeps at most.
pub(crate) const MAX_CACHED: usize = 256;
/// Lua memory (compiled code and chunk-level state) the cache keeps at most.
pub(crate) const MAX_CACHED_MEMORY: usize = 64 * 1024 * 1024;
/// Idle lanes are swept once this many exist.
const LANES_SWEPT_AT: usize = 1024;

/// Compiled user code of one hook, as the cache keeps it: cheap to clone (shared), and able to
/// say how much memory it holds, so the cache can bound the total.
pub(crate) trait CompiledCode: Clone {
    /// Bytes the code holds (its Lua state, or about the size of its source).
    fn memory(&self) -> usize;
}

/// The lanes of all hooks and the cache of their compiled code `C`.
pub(crate) struct HookLua<C> {
    pool: LuaPool,
    cache: Mutex<Cache<C>>,
    lanes: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

/// A hook's turn in its lane: while it is held, no other job of that hook runs.
#[must_use = "the turn ends when it is dropped"]
pub(crate) struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl<C: CompiledCode> HookLua<C> {
    /// Lanes and cache for user code that runs on `pool`.
    pub(crate) fn new(pool: LuaPool) -> HookLua<C> {
        HookLua {
            pool,
            cache: Mutex::new(Cache::default()),
            lanes: Mutex::new(HashMap::new()),
        }
    }

    /// The pool the hooks' jobs run on.
    pub(crate) fn pool(&self) -> &LuaPool {
        &self.pool
    }

    /// Waits for `hook_id`'s turn: one permit per hook, so its user code runs on one pool thread
    /// at a time.
    pub(crate) async fn turn(&self, hook_id: Uuid) -> Result<Turn, PoolError> {
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            if lanes.len() >= LANES_SWEPT_AT {
                // A lane only this map holds has no job running or waiting.
                lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
            }
            lanes
                .entry(hook_id)
                .or_insert_with(|| Arc::new(Semaphore::new(1)))
                .clone()
        };
        lane.acquire_owned()
            .await
            .map(|permit| Turn { _permit: permit })
            .map_err(|_| PoolError::Stopped)
    }

    /// The code cached for `hook_id`, if any; the caller checks it was built from the hook's
    /// current configuration.
    pub(crate) fn cached(&self, hook_id: Uuid) -> Option<C> {
        self.lock_cache().get(hook_id)
    }

    /// Caches `code` for `hook_id`, replacing what was cached for it.
    pub(crate) fn remember(&self, hook_id: Uuid, code: C) {
        self.lock_cache().insert(hook_id, code);
    }

    /// Drops what is cached for a hook that changed or was deleted.
    pub(crate) fn forget(&self, hook_id: Uuid) {
        self.lock_cache().remove(hook_id);
    }

    /// How many entries the cache holds, and how many bytes of code.
    #[cfg(test)]
    pub(crate) fn cache_usage(&self) -> (usize, usize) {
        let cache = self.lock_cache();
        (cache.entries.len(), cache.memory)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache<C>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Cached<C> {
    code: C,
    memory: usize,
    last_used: u64,
}

/// The compiled-code cache: least recently used out first, within [`MAX_CACHED`] entries and
/// [`MAX_CACHED_MEMORY`] bytes.
struct Cache<C> {
    entries: HashMap<Uuid, Cached<C>>,
    memory: usize,
    clock: u64,
}

impl<C> Default for Cache<C> {
    fn default() -> Cache<C> {
        Cache {
            entries: HashMap::new(),
            memory: 0,
            clock: 0,
        }
    }
}

impl<C: CompiledCode> Cache<C> {
    fn get(&mut self, hook_id: Uuid) -> Option<C> {
        self.clock += 1;
        let entry = self.entries.get_mut(&hook_id)?;
        entry.last_used = self.clock;
        Some(entry.code.clone())
    }

    fn insert(&mut self, hook_id: Uuid, code: C) {
        self.remove(hook_id);
        let memory = code.memory();
        self.clock += 1;
        self.memory += memory;
        self.entries.insert(
            hook_id,
            Cached {
                code,
                memory,
                last_used: self.clock,
            },
        );
        while self.entries.len() > MAX_CACHED
            || (self.memory > MAX_CACHED_MEMORY && self.entries.len() > 1)
        {
            let oldest = self
                .entries
                .iter()
                .filter(|(id, _)| **id != hook_id)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.remove(id),
                None => break,
            }
        }
    }

    fn remove(&mut self, hook_id: Uuid) {
        if let Some(old) = self.entries.remove(&hook_id) {
            self.memory -= old.memory;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Code that says it holds `.0` bytes.
    #[derive(Clone, Debug, PartialEq)]
    struct Sized(usize);

    impl CompiledCode for Sized {
        fn memory(&self) -> usize {
            self.0
        }
    }

    fn hook_lua() -> HookLua<Sized> {
        HookLua::new(LuaPool::new(1).unwrap())
    }

    #[test]
    fn the_least_recently_used_code_goes_first() {
        // Given a full cache whose oldest entry was just used
        let lua = hook_lua();
        let hooks: Vec<Uuid> = (0..MAX_CACHED).map(|_| Uuid::new_v4()).collect();
        for hook in &hooks {
            lua.remember(*hook, Sized(1));
        }
        assert_eq!(lua.cached(hooks[0]), Some(Sized(1)));
        // When one more hook's code comes
        let newcomer = Uuid::new_v4();
        lua.remember(newcomer, Sized(1));
        // Then the least recently used went, and the one used lately stayed
        assert_eq!(lua.cache_usage(), (MAX_CACHED, MAX_CACHED));
        assert_eq!(lua.cached(hooks[1]), None);
        assert_eq!(lua.cached(hooks[0]), Some(Sized(1)));
        assert_eq!(lua.cached(newcomer), Some(Sized(1)));
    }

    #[test]
    fn code_bigger_than_the_memory_bound_stays_alone() {
        let lua = hook_lua();
        let (small, big) = (Uuid::new_v4(), Uuid::new_v4());
        lua.remember(small, Sized(1));
        lua.remember(big, Sized(MAX_CACHED_MEMORY + 1));
        // The newest entry is never evicted by its own insertion; the others make room.
        assert_eq!(lua.cache_usage(), (1, MAX_CACHED_MEMORY + 1));
        assert_eq!(lua.cached(small), None);
        lua.forget(big);
        assert_eq!(lua.cache_usage(), (0, 0));
    }

    #[tokio::test]
    async fn a_hook_waits_for_its_own_turn_only() {
        // Given a hook whose turn is taken
        let lua = hook_lua();
        let (busy, other) = (Uuid::new_v4(), Uuid::new_v4());
        let turn = lua.turn(busy).await.unwrap();
        // Then another hook gets its turn at once, the busy hook only once the turn ends
        let wait = Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, lua.turn(other)).await.is_ok());
        assert!(tokio::time::timeout(wait, lua.turn(busy)).await.is_err());
        drop(turn);
        assert!(tokio::time::timeout(wait, lua.turn(busy)).await.is_ok());
    }
}
