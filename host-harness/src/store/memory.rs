//! The answer store in this process's memory (`--cache memory`): gone when
//! the process ends; bounded by entry count, oldest stored first out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Backend, BackendError, LIST_PAGE, Stats, add_counter, counter_ttl_ms, cutoff_ms, live, lock,
    now_ms, parse_counter, times,
};

/// How many entries a memory store keeps at most.
pub const MAX_ENTRIES: usize = 10_000;

/// One value.
struct Entry {
    value: Vec<u8>,
    stored_at: i64,
    expires_at: Option<i64>,
    /// Its place in [`Map::order`].
    seq: u64,
}

/// The entries, and their keys in the order they were stored.
#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Map {
    /// Stores `entry` under `key` as the newest, replacing any entry there.
    fn put(&mut self, key: &str, value: Vec<u8>, stored_at: i64, expires_at: Option<i64>) {
        self.remove(key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.to_string());
        self.entries.insert(
            key.to_string(),
            Entry {
                value,
                stored_at,
                expires_at,
                seq,
            },
        );
    }

    /// Removes `key`; whether it was there.
    fn remove(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(old) => {
                self.order.remove(&old.seq);
                true
            }
            None => false,
        }
    }

    /// The live entry at `key`; an expired one is dropped.
    fn live(&mut self, key: &str, now: i64) -> Option<&mut Entry> {
        let expired = !live(self.entries.get(key)?.expires_at, now);
        if expired {
            self.remove(key);
            return None;
        }
        self.entries.get_mut(key)
    }

    /// Drops the oldest entries until at most `max` are left.
    fn bound(&mut self, max: usize) {
        while self.entries.len() > max {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&key);
        }
    }

    /// Removes every entry `doomed` picks; how many.
    fn remove_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> u64 {
        let keys: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| doomed(e))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            self.remove(key);
        }
        u64::try_from(keys.len()).unwrap_or(u64::MAX)
    }
}

/// A memory answer store.
pub struct MemoryBackend {
    map: Mutex<Map>,
    max_entries: usize,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl MemoryBackend {
    /// An empty store of at most [`MAX_ENTRIES`] entries.
    pub fn new() -> MemoryBackend {
        MemoryBackend::with_max_entries(MAX_ENTRIES)
    }

    /// An empty store of at most `max_entries` entries.
    pub fn with_max_entries(max_entries: usize) -> MemoryBackend {
        MemoryBackend {
            map: Mutex::new(Map::default()),
            max_entries,
        }
    }
}

impl Backend for MemoryBackend {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(lock(&self.map).live(key, now_ms()).map(|e| e.value.clone()))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), BackendError> {
        let mut map = lock(&self.map);
        map.put(key, value.to_vec(), now_ms(), times(value).expires_at);
        map.bound(self.max_entries);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), BackendError> {
        lock(&self.map).remove(key);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, BackendError> {
        Ok(lock(&self.map).live(key, now_ms()).is_some())
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, BackendError> {
        let mut map = lock(&self.map);
        let now = now_ms();
        if let Some(entry) = map.live(key, now) {
            let next = add_counter(key, parse_counter(key, &entry.value)?, delta)?;
            entry.value = next.to_string().into_bytes();
            return Ok(next);
        }
        map.put(
            key,
            delta.to_string().into_bytes(),
            now,
            Some(now.saturating_add(counter_ttl_ms())),
        );
        map.bound(self.max_entries);
        Ok(delta)
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), BackendError> {
        let map = lock(&self.map);
        let now = now_ms();
        let mut keys: Vec<&String> = map
            .entries
            .iter()
            .filter(|(_, e)| live(e.expires_at, now))
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let page: Vec<String> = keys
            .iter()
            .skip(start)
            .take(LIST_PAGE)
            .map(|k| (*k).clone())
            .collect();
        let end = start.saturating_add(page.len());
        let next = (end < keys.len()).then(|| u64::try_from(end).unwrap_or(u64::MAX));
        Ok((page, next))
    }

    fn stats(&self) -> Result<Stats, BackendError> {
        let map = lock(&self.map);
        let now = now_ms();
        let mut stats = Stats::new("memory".to_string());
        for (key, entry) in map.entries.iter().filter(|(_, e)| live(e.expires_at, now)) {
            stats.count(key, &entry.value, Some(entry.stored_at));
        }
        Ok(stats)
    }

    fn scan_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, BackendError> {
        let map = lock(&self.map);
        let now = now_ms();
        let mut found: Vec<(String, Vec<u8>)> = map
            .entries
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && live(e.expires_at, now))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        found.sort();
        found.truncate(limit);
        Ok(found)
    }

    fn purge(&self, older_than: Option<Duration>) -> Result<u64, BackendError> {
        let mut map = lock(&self.map);
        let now = now_ms();
        // The expired go uncounted, as in the other backends.
        map.remove_where(|e| !live(e.expires_at, now));
        let cutoff = older_than.map_or(i64::MAX, cutoff_ms);
        Ok(map.remove_where(|e| e.stored_at < cutoff))
    }
}
