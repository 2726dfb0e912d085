//! The bounded store of mirrors in flight: one entry per mirrored request, from the moment
//! its body is complete until both answers are in (or its deadline passes).
//!
//! It has a fixed capacity (`mirror.max_in_flight`, per worker): a request that finds it
//! full is not mirrored (`overloaded`), so a slow canary costs at most that many entries of
//! memory, never an unbounded backlog.

use std::collections::BTreeMap;

pub type EntryId = u64;

struct Slot<T> {
    deadline_ms: u64,
    value: T,
}

pub struct Pending<T> {
    capacity: usize,
    next_id: EntryId,
    entries: BTreeMap<EntryId, Slot<T>>,
}

impl<T> Pending<T> {
    pub fn new(capacity: usize) -> Self {
        Pending {
            capacity,
            next_id: 1,
            entries: BTreeMap::new(),
        }
    }

    /// Stores `value` until `deadline_ms`. Gives it back when the store is full.
    pub fn insert(&mut self, value: T, deadline_ms: u64) -> Result<EntryId, T> {
        if self.entries.len() >= self.capacity {
            return Err(value);
        }
        let id = self.next_id;
        // u64 ids do not wrap in the life of a VM; ids are never reused while it runs.
        self.next_id = self.next_id.wrapping_add(1);
        self.entries.insert(id, Slot { deadline_ms, value });
        Ok(id)
    }

    pub fn get_mut(&mut self, id: EntryId) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|s| &mut s.value)
    }

    pub fn remove(&mut self, id: EntryId) -> Option<T> {
        self.entries.remove(&id).map(|s| s.value)
    }

    /// Removes and returns every entry whose deadline is at or before `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(EntryId, T)> {
        let due: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(_, s)| s.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        due.into_iter()
            .filter_map(|id| self.remove(id).map(|v| (id, v)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn capacity_is_a_hard_limit() {
        let mut p = Pending::new(2);
        let a = p.insert("a", 100).unwrap();
        let b = p.insert("b", 200).unwrap();
        assert_eq!(p.insert("c", 300), Err("c"));
        assert_eq!(p.len(), 2);
        assert_eq!(p.remove(a), Some("a"));
        assert_eq!(p.remove(a), None, "removed once");
        let c = p.insert("c", 300).unwrap();
        assert!(c != a && c != b, "ids are not reused");
        *p.get_mut(b).unwrap() = "B";
        assert_eq!(p.remove(b), Some("B"));
        assert_eq!(p.get_mut(b), None);
    }

    #[test]
    fn expiry() {
        let mut p = Pending::new(10);
        let ids: Vec<EntryId> = [300, 100, 200, 100]
            .iter()
            .map(|d| p.insert(*d, *d).unwrap())
            .collect();
        assert!(p.expire(99).is_empty());
        let due: Vec<(EntryId, u64)> = p.expire(100);
        assert_eq!(due, vec![(ids[1], 100), (ids[3], 100)]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.expire(1000).len(), 2);
        assert!(p.is_empty());
    }

    #[test]
    fn stays_bounded_under_churn() {
        // A slow canary: every tick more requests try to enter than leave.
        let mut p = Pending::new(8);
        let (mut stored, mut shed) = (0, 0);
        for now in 0..1000u64 {
            for _ in 0..3 {
                match p.insert(now, now + 50) {
                    Ok(_) => stored += 1,
                    Err(_) => shed += 1,
                }
            }
            p.expire(now);
            assert!(p.len() <= 8);
        }
        assert_eq!(stored + shed, 3000);
        assert!(shed > 2000, "{shed}");
    }
}
