//! [`Recent`]: a bounded map that keeps what was used lately (two generations).
//!
//! Entries go into the young generation. When it holds half the limit (or
//! the map is full), the old generation is dropped and the young one
//! becomes old. A hit in the old generation moves the entry back to the
//! young one. So at most `limit` entries are kept, every entry used within
//! the last `limit / 2` inserts survives, and each operation is a hash
//! lookup or two — recency without keeping an order.
//!
//! An entry taken out and put back ([`Recent::put_back`], what a command
//! does with a case's state) goes into the young generation without
//! dropping the old one while the map has room: a working set of up to
//! `limit` entries used again in the order they were made — timers firing
//! in the order their cases were opened — stays cached, where dropping the
//! old generation at the first such use turned nearly every later one into
//! a miss.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `limit` entries that evicts the least recently used
/// generation. See the module docs.
#[derive(Debug)]
pub(crate) struct Recent<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    limit: usize,
}

impl<K: Eq + Hash + Clone, V> Recent<K, V> {
    /// A map of at most `limit` entries (0: keeps nothing).
    pub fn new(limit: usize) -> Self {
        Recent {
            young: HashMap::new(),
            old: HashMap::new(),
            limit,
        }
    }

    fn generation(&self) -> usize {
        self.limit.div_ceil(2)
    }

    /// Keeps `value` under `key`, evicting the old generation if the young
    /// one is full.
    pub fn insert(&mut self, key: K, value: V) {
        drop(self.insert_evicting(key, value));
    }

    /// As [`Recent::insert`], handing back what it evicted (for the caller
    /// to drop where that costs less).
    pub fn insert_evicting(&mut self, key: K, value: V) -> Option<HashMap<K, V>> {
        if self.limit == 0 {
            return None;
        }
        self.old.remove(&key);
        let mut evicted = None;
        if !self.young.contains_key(&key)
            && (self.young.len() >= self.generation()
                || self.young.len() + self.old.len() >= self.limit)
        {
            evicted = Some(std::mem::replace(
                &mut self.old,
                std::mem::take(&mut self.young),
            ));
        }
        self.young.insert(key, value);
        evicted.filter(|e| !e.is_empty())
    }

    /// Keeps `value` under `key` like [`Recent::insert`], but while the
    /// map has room and an old generation to keep, without dropping it:
    /// for an entry taken out with [`Recent::remove`] and put back after
    /// use (see the module docs).
    pub fn put_back(&mut self, key: K, value: V) -> Option<HashMap<K, V>> {
        self.old.remove(&key);
        if self.limit > 0 && !self.old.is_empty() && self.young.len() + self.old.len() < self.limit
        {
            self.young.insert(key, value);
            return None;
        }
        self.insert_evicting(key, value)
    }

    /// Takes the entry under `key` out of the map.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.young.remove(key).or_else(|| self.old.remove(key))
    }

    /// The entry under `key` (or a borrowed form of it), marked as used.
    pub fn get<Q>(&mut self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(value) = self.old.remove(key) {
            self.insert(key.to_owned(), value);
        }
        self.young.get(key)
    }

    /// How many entries are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_limit_and_what_was_used_lately() {
        let mut r = Recent::new(4);
        for i in 0..4 {
            r.insert(i, i * 10);
        }
        assert_eq!(r.len(), 4);
        // 0 is used again: it outlives 1, which is not.
        assert_eq!(r.get(&0), Some(&0));
        r.insert(4, 40);
        let evicted = r.insert_evicting(5, 50).expect("a generation is evicted");
        let mut gone: Vec<_> = evicted.into_keys().collect();
        gone.sort();
        assert_eq!(gone, vec![2, 3], "the generation not used since");
        assert!(r.len() <= 4);
        assert_eq!(r.get(&0), Some(&0));
        assert_eq!(r.get(&1), None);
        assert_eq!(r.get(&5), Some(&50));
        for i in 100..1000 {
            r.insert(i, i);
            assert!(r.len() <= 4);
        }
        assert_eq!(r.get(&999), Some(&999));
        assert_eq!(r.remove(&999), Some(999));
        assert_eq!(r.get(&999), None);
    }

    #[test]
    fn entries_put_back_in_the_order_they_were_made_all_stay() {
        let mut r = Recent::new(10);
        for i in 0..10 {
            r.insert(i, i);
        }
        // Each taken out and put back in turn, three times over (a
        // command on each case, in the order the cases were opened).
        for round in 0..3 {
            for i in 0..10 {
                let v = r.remove(&i);
                assert_eq!(v, Some(i), "round {round}: entry {i} still cached");
                assert!(r.put_back(i, i).is_none_or(|e| e.is_empty()));
                assert!(r.len() <= 10);
            }
        }
        // New entries still push the least recently used out, within the
        // limit.
        for i in 10..100 {
            r.insert(i, i);
            assert!(r.len() <= 10);
            let v = r.remove(&(i - 1));
            if let Some(v) = v {
                r.put_back(i - 1, v);
            }
            assert!(r.len() <= 10);
        }
        assert_eq!(r.get(&99), Some(&99));
        assert_eq!(r.get(&98), Some(&98));
        assert_eq!(r.get(&0), None);
    }

    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        let mut r = Recent::new(0);
        r.insert("a", 1);
        assert_eq!(r.get(&"a"), None);
        assert_eq!(r.len(), 0);
    }
}
