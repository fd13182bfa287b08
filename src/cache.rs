//! A per-instance cache of parsed verdict answers with a TTL.
//!
//! It keeps what the API said (the verdict sections, or "not found"), not the
//! verdict itself, so a changed zone mapping applies to cached answers too.
//! Errors, rate-limited and quota answers are never stored. Bounded: when
//! full, expired entries go first, then the oldest.

use std::collections::{HashMap, VecDeque};

use crate::response::VerdictSections;

/// A cached answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// A 200 answer's verdict sections.
    Answer(Box<VerdictSections>),
    /// HTTP 404.
    NotFound,
}

/// The cache.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<String, (u64, Cached)>,
    order: VecDeque<String>,
    max_entries: usize,
}

/// Default bound on entries.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

impl Cache {
    /// An empty cache holding at most `max_entries`.
    pub fn new(max_entries: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// The key: flavour + base URL + address + sections.
    pub fn key(api: &str, base_url: &str, ip: &str, sections: &[String]) -> String {
        format!("{api}|{base_url}|{ip}|{}", sections.join(","))
    }

    /// A live entry, if any.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<&Cached> {
        self.entries
            .get(key)
            .filter(|(expires, _)| *expires > now_ms)
            .map(|(_, c)| c)
    }

    /// Stores an answer for `ttl_ms` (nothing when 0).
    pub fn put(&mut self, key: String, value: Cached, now_ms: u64, ttl_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        if !self.entries.contains_key(&key) {
            if self.entries.len() >= self.max_entries {
                self.entries.retain(|_, (expires, _)| *expires > now_ms);
                self.order.retain(|k| self.entries.contains_key(k));
            }
            while self.entries.len() >= self.max_entries {
                match self.order.pop_front() {
                    Some(oldest) => {
                        self.entries.remove(&oldest);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
        }
        self.entries
            .insert(key, (now_ms.saturating_add(ttl_ms), value));
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let mut c = Cache::new(2);
        c.put("a".into(), Cached::NotFound, 0, 100);
        assert!(c.get("a", 99).is_some());
        assert!(c.get("a", 100).is_none());
        c.put("b".into(), Cached::NotFound, 0, 1000);
        c.put("c".into(), Cached::NotFound, 200, 1000);
        assert_eq!(c.len(), 2, "the expired entry made room");
        c.put("d".into(), Cached::NotFound, 300, 1000);
        assert_eq!(c.len(), 2);
        assert!(c.get("b", 300).is_none(), "the oldest went");
        assert!(c.get("d", 300).is_some());
        c.put("e".into(), Cached::NotFound, 300, 0);
        assert!(c.get("e", 300).is_none(), "ttl 0 stores nothing");
    }
}
