//! The bounded store of mirrors in flight: one entry per mirrored request, from the moment
//! its body is complete until both answers are in (or its deadline passes).
//!
//! It has a fixed capacity (`mirror.max_in_flight`, per worker): a request that finds it
//! full is not mirrored (`overloaded`), so a slow canary costs at most that many entries of
//! memory, never an unbounded backlog.

use std::collections::VecDeque;

pub type EntryId = u64;

struct Slot<T> {
    deadline_ms: u64,
    value: T,
}

/// Ids only grow, so entries pushed at the back stay sorted by id and are found by binary
/// search; a removed entry leaves an empty slot until the front is popped or the queue is
/// compacted, which keeps it within twice the live entries. A `BTreeMap` did the same with
/// 8 KB more code in the Wasm module.
pub struct Pending<T> {
    capacity: usize,
    next_id: EntryId,
    live: usize,
    entries: VecDeque<(EntryId, Option<Slot<T>>)>,
}

impl<T> Pending<T> {
    pub fn new(capacity: usize) -> Self {
        Pending {
            capacity,
            next_id: 1,
            live: 0,
            entries: VecDeque::new(),
        }
    }

    pub fn insert(&mut self, value: T, deadline_ms: u64) -> Result<EntryId, T> {
        if self.live >= self.capacity {
            return Err(value);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.entries
            .push_back((id, Some(Slot { deadline_ms, value })));
        self.live = self.live.saturating_add(1);
        Ok(id)
    }

    fn slot(&mut self, id: EntryId) -> Option<&mut Option<Slot<T>>> {
        let i = self.entries.binary_search_by_key(&id, |(k, _)| *k).ok()?;
        self.entries.get_mut(i).map(|(_, slot)| slot)
    }

    pub fn get_mut(&mut self, id: EntryId) -> Option<&mut T> {
        self.slot(id)?.as_mut().map(|s| &mut s.value)
    }

    pub fn remove(&mut self, id: EntryId) -> Option<T> {
        let value = self.slot(id)?.take()?.value;
        self.live = self.live.saturating_sub(1);
        self.tidy();
        Some(value)
    }

    pub fn expire(&mut self, now_ms: u64) -> Vec<(EntryId, T)> {
        let mut due = Vec::new();
        for (id, slot) in self.entries.iter_mut() {
            if slot.as_ref().is_some_and(|s| s.deadline_ms <= now_ms) {
                if let Some(s) = slot.take() {
                    due.push((*id, s.value));
                }
            }
        }
        self.live = self.live.saturating_sub(due.len());
        self.tidy();
        due
    }

    /// Drops empty slots at the front, and all of them once they outnumber the live ones.
    fn tidy(&mut self) {
        while self.entries.front().is_some_and(|(_, slot)| slot.is_none()) {
            self.entries.pop_front();
        }
        if self.entries.len() > self.live.saturating_mul(2).saturating_add(16) {
            self.entries.retain(|(_, slot)| slot.is_some());
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
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

    #[test]
    fn empty_slots_do_not_pile_up_behind_a_long_lived_entry() {
        // The oldest entry stays (a canary that never answers one request) while thousands
        // come and go out of order after it: the queue must not keep their empty slots.
        let mut p = Pending::new(64);
        let oldest = p.insert(0u64, u64::MAX).unwrap();
        let mut live = Vec::new();
        for i in 1..20_000u64 {
            live.push(p.insert(i, u64::MAX).unwrap());
            if live.len() == 32 {
                // Newest first, so removals are not all at the front.
                while let Some(id) = live.pop() {
                    assert!(p.remove(id).is_some());
                }
            }
            assert!(
                p.entries.len() <= 2 * p.len() + 17,
                "{} slots for {} entries",
                p.entries.len(),
                p.len()
            );
        }
        assert_eq!(p.get_mut(oldest), Some(&mut 0));
        for id in &live {
            assert!(p.get_mut(*id).is_some());
        }
        assert_eq!(p.len(), live.len() + 1);
    }
}
