//! The Kademlia record store: provider records only, bounded in memory, and fair
//! between providers, so a few peer ids cannot crowd out everyone else's rendezvous.
//!
//! libp2p-kad's `MemoryStore` keeps at most 1024 keys and 20 providers per key, and
//! silently drops what comes after: one host that publishes 1024 junk keys under a
//! handful of throwaway peer ids stops every rendezvous through a `pcp node` until the
//! junk expires. [`ProviderStore`] keeps admitting new records, and decides what to
//! drop instead:
//!
//! | limit                          | value | why |
//! |--------------------------------|-------|-----|
//! | records in total               | 4096  | about 1000 concurrent transfers (a sender leaves up to four live records: one per 5-minute slot within the 15-minute TTL); about 5 MiB at worst (a record with its indexes is at most ~1.25 KiB) |
//! | providers per key              | 20    | Kademlia's k, what libp2p-kad keeps too; keeps a `GET_PROVIDERS` answer under kad's 16 KiB message limit (with the address cap below) |
//! | records per provider peer id   | 16    | a pcp peer id lives for one transfer and provides one key per slot; 16 is four times that |
//! | addresses per record           | 8     | a sender's confirmed addresses (TCP, QUIC, v4, v6, a relay circuit) fit; more is junk |
//! | address bytes per record       | 384   | 20 providers × 384 B keeps the providers of an answer under ~10 KiB |
//!
//! Eviction, when a limit is reached (after expired records are dropped):
//! - a provider at its own limit replaces its own stalest record, so the peer is never
//!   refused, and it cannot grow;
//! - a full key, or a full store, drops a record of the provider that holds the most
//!   records in the store, its stalest one; among equals, the stalest record of all.
//!   So a flood from many peer ids displaces the flood first, and a real sender with one
//!   fresh record goes last.
//!
//! "Stalest" is the least recently added or refreshed: a provider that publishes the
//! same key again refreshes its record (new addresses, new expiry) in place.
//!
//! Value records (`PUT_VALUE`) are refused: pcp never uses them, and a node that stored
//! them would be a free memory sink. Our own provider records (a sender's, never a
//! node's) are kept apart, without limits: pcp provides at most two keys at a time.
//!
//! Invariants (checked by the tests' `check`):
//! - every remote record is in `by_key`, `by_provider` and `by_age` under one sequence
//!   number, and nowhere else;
//! - `by_age.len()` ≤ `max_records`, each key's list ≤ `max_per_key`, each provider's
//!   map ≤ `max_per_provider`.
//!
//! Limits of the defence: a flood of one known key from 20 fresh peer ids can still
//! crowd that key; the connection limits (`super::limits`) bound how many peer ids one
//! host has connected at once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, hash_map};
use std::iter;

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// The limits of a [`ProviderStore`]; see the module docs for the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Remote provider records in total.
    pub max_records: usize,
    /// Providers per key.
    pub max_per_key: usize,
    /// Records per provider peer id, across keys.
    pub max_per_provider: usize,
    /// Addresses kept per record (the first ones).
    pub max_addresses: usize,
    /// Bytes of addresses kept per record.
    pub max_address_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_records: 4096,
            max_per_key: 20,
            max_per_provider: 16,
            max_addresses: 8,
            max_address_bytes: 384,
        }
    }
}

/// A remote provider record and when it was last added or refreshed.
#[derive(Debug)]
struct Entry {
    seq: u64,
    record: ProviderRecord,
}

/// A bounded, fair provider record store; see the module docs.
#[derive(Debug)]
pub(crate) struct ProviderStore {
    local: PeerId,
    limits: Limits,
    /// Our own records, by key.
    provided: HashMap<RecordKey, ProviderRecord>,
    /// Remote records by key.
    by_key: HashMap<RecordKey, Vec<Entry>>,
    /// Each remote provider's records: sequence number to key, stalest first.
    by_provider: HashMap<PeerId, BTreeMap<u64, RecordKey>>,
    /// Every remote record by sequence number, stalest first. With one TTL for all,
    /// this is also the order of expiry.
    by_age: BTreeMap<u64, (RecordKey, PeerId)>,
    /// The next sequence number; it only grows.
    next_seq: u64,
}

impl ProviderStore {
    /// An empty store for the node `local`.
    pub(crate) fn new(local: PeerId, limits: Limits) -> ProviderStore {
        ProviderStore {
            local,
            limits,
            provided: HashMap::new(),
            by_key: HashMap::new(),
            by_provider: HashMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Drops expired records, stalest first, up to the first one still alive.
    fn purge_expired(&mut self) {
        // libp2p-kad stamps expiries with `web_time::Instant`: `std`'s, off wasm.
        let now = std::time::Instant::now();
        while let Some((&seq, (key, provider))) = self.by_age.first_key_value() {
            let expired = self
                .by_key
                .get(key)
                .and_then(|list| list.iter().find(|e| e.seq == seq))
                .is_some_and(|e| e.record.is_expired(now));
            if !expired {
                break;
            }
            let (key, provider) = (key.clone(), *provider);
            self.remove_remote(&key, &provider);
        }
    }

    /// Removes the remote record of `provider` for `key` from every index.
    fn remove_remote(&mut self, key: &RecordKey, provider: &PeerId) {
        let hash_map::Entry::Occupied(mut list) = self.by_key.entry(key.clone()) else {
            return;
        };
        let Some(i) = list.get().iter().position(|e| e.record.provider == *provider) else {
            return;
        };
        let seq = list.get_mut().swap_remove(i).seq;
        if list.get().is_empty() {
            list.remove();
        }
        self.by_age.remove(&seq);
        if let hash_map::Entry::Occupied(mut keys) = self.by_provider.entry(*provider) {
            keys.get_mut().remove(&seq);
            if keys.get().is_empty() {
                keys.remove();
            }
        }
    }

    /// The record to drop among `candidates` (sequence numbers with their provider):
    /// the one whose provider holds the most records, the stalest among equals.
    fn victim(&self, candidates: impl Iterator<Item = (u64, PeerId)>) -> Option<(u64, PeerId)> {
        let held = |p: &PeerId| self.by_provider.get(p).map_or(0, BTreeMap::len);
        // Most records first, then the smallest (stalest) sequence number.
        candidates.min_by_key(|(seq, p)| (std::cmp::Reverse(held(p)), *seq))
    }

    /// Drops the stalest record of whichever provider holds the most, store-wide;
    /// false if there was nothing to drop.
    fn evict_from_store(&mut self) -> bool {
        // A provider's first entry is its stalest: one candidate per provider.
        let candidates = self
            .by_provider
            .iter()
            .filter_map(|(p, keys)| keys.first_key_value().map(|(seq, _)| (*seq, *p)));
        if let Some((seq, provider)) = self.victim(candidates)
            && let Some((key, _)) = self.by_age.get(&seq).cloned()
        {
            tracing::trace!(%provider, "provider store full: dropping a record");
            self.remove_remote(&key, &provider);
            return true;
        }
        false
    }

    /// Drops one record of `key`: the provider that holds the most loses its record.
    fn evict_from_key(&mut self, key: &RecordKey) {
        let Some(list) = self.by_key.get(key) else { return };
        let candidates = list.iter().map(|e| (e.seq, e.record.provider));
        if let Some((_, provider)) = self.victim(candidates) {
            tracing::trace!(%provider, "provider key full: dropping a record");
            self.remove_remote(key, &provider);
        }
    }

    /// Trims a peer-supplied address list to the limits, keeping the first ones.
    fn trim_addresses(&self, record: &mut ProviderRecord) {
        let mut bytes = 0;
        let mut keep = 0;
        for addr in record.addresses.iter().take(self.limits.max_addresses) {
            bytes += addr.len();
            if bytes > self.limits.max_address_bytes {
                break;
            }
            keep += 1;
        }
        record.addresses.truncate(keep);
    }

    fn add_remote(&mut self, mut record: ProviderRecord) {
        self.trim_addresses(&mut record);
        let seq = self.next_seq;
        self.next_seq += 1;
        let (key, provider) = (record.key.clone(), record.provider);

        // A refresh: same slot in every index, with a new sequence number.
        if let Some(entry) = self
            .by_key
            .get_mut(&key)
            .and_then(|list| list.iter_mut().find(|e| e.record.provider == provider))
        {
            let old = std::mem::replace(&mut entry.seq, seq);
            entry.record = record;
            self.by_age.remove(&old);
            self.by_age.insert(seq, (key.clone(), provider));
            let keys = self.by_provider.entry(provider).or_default();
            keys.remove(&old);
            keys.insert(seq, key);
            return;
        }

        self.purge_expired();
        // The provider's own limit first: it makes room by itself, without touching
        // anyone else's records.
        if let Some(keys) = self.by_provider.get(&provider)
            && keys.len() >= self.limits.max_per_provider
            && let Some((_, oldest)) = keys.first_key_value()
        {
            let oldest = oldest.clone();
            self.remove_remote(&oldest, &provider);
        }
        if self.by_key.get(&key).is_some_and(|l| l.len() >= self.limits.max_per_key) {
            self.evict_from_key(&key);
        }
        while self.by_age.len() >= self.limits.max_records {
            if !self.evict_from_store() {
                break;
            }
        }
        self.by_key.entry(key.clone()).or_default().push(Entry { seq, record });
        self.by_age.insert(seq, (key.clone(), provider));
        self.by_provider.entry(provider).or_default().insert(seq, key);
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = iter::Empty<Cow<'a, Record>>;
    type ProvidedIter<'a> = iter::Map<
        hash_map::Values<'a, RecordKey, ProviderRecord>,
        fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
    >;

    fn get(&self, _: &RecordKey) -> Option<Cow<'_, Record>> {
        None
    }

    /// Value records are refused; see the module docs.
    fn put(&mut self, _: Record) -> Result<()> {
        Err(Error::MaxRecords)
    }

    fn remove(&mut self, _: &RecordKey) {}

    fn records(&self) -> Self::RecordsIter<'_> {
        iter::empty()
    }

    /// Never fails: a new record always gets in, and something else makes room.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.local {
            self.provided.insert(record.key.clone(), record);
        } else {
            self.add_remote(record);
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let remote = self.by_key.get(key).into_iter().flatten().map(|e| e.record.clone());
        self.provided.get(key).cloned().into_iter().chain(remote).collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.provided.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.provided.remove(key);
        } else {
            self.remove_remote(key, provider);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::Multiaddr;

    use super::*;

    fn key(i: usize) -> RecordKey {
        RecordKey::new(&format!("key-{i}"))
    }

    fn record(key: RecordKey, provider: PeerId) -> ProviderRecord {
        let addr: Multiaddr = "/ip4/198.18.0.3/tcp/4001".parse().expect("addr");
        ProviderRecord {
            key,
            provider,
            expires: Some(Instant::now() + Duration::from_secs(900)),
            addresses: vec![addr],
        }
    }

    fn has(store: &ProviderStore, key: &RecordKey, provider: PeerId) -> bool {
        store.providers(key).iter().any(|r| r.provider == provider)
    }

    /// The module invariants.
    fn check(store: &ProviderStore) {
        let l = store.limits;
        assert!(store.by_age.len() <= l.max_records);
        let mut n = 0;
        for (key, list) in &store.by_key {
            assert!(!list.is_empty() && list.len() <= l.max_per_key);
            for e in list {
                n += 1;
                assert_eq!(&e.record.key, key);
                assert_eq!(store.by_age.get(&e.seq), Some(&(key.clone(), e.record.provider)));
                assert_eq!(store.by_provider[&e.record.provider].get(&e.seq), Some(key));
            }
        }
        assert_eq!(n, store.by_age.len());
        let per_provider: usize = store.by_provider.values().map(BTreeMap::len).sum();
        assert_eq!(per_provider, n);
        for keys in store.by_provider.values() {
            assert!(!keys.is_empty() && keys.len() <= l.max_per_provider);
        }
    }

    /// The case: 2,000 junk records from 5 peer ids, then a real provider.
    #[test]
    fn junk_from_a_few_peer_ids_does_not_keep_a_real_provider_out() {
        let mut store = ProviderStore::new(PeerId::random(), Limits::default());
        let junk: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for i in 0..2000 {
            store.add_provider(record(key(i), junk[i % junk.len()])).expect("add");
        }
        check(&store);
        assert_eq!(store.by_age.len(), 5 * Limits::default().max_per_provider);

        let (real, k) = (PeerId::random(), key(1_000_000));
        store.add_provider(record(k.clone(), real)).expect("add");
        check(&store);
        assert_eq!(store.providers(&k).len(), 1);
        assert!(has(&store, &k, real));
    }

    #[test]
    fn a_provider_at_its_limit_replaces_its_own_stalest_record() {
        let limits = Limits { max_per_provider: 3, ..Limits::default() };
        let mut store = ProviderStore::new(PeerId::random(), limits);
        let p = PeerId::random();
        for i in 0..5 {
            store.add_provider(record(key(i), p)).expect("add");
        }
        check(&store);
        let kept: Vec<bool> = (0..5).map(|i| has(&store, &key(i), p)).collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }

    #[test]
    fn a_full_key_drops_the_heaviest_provider_first() {
        let limits = Limits { max_per_key: 3, ..Limits::default() };
        let mut store = ProviderStore::new(PeerId::random(), limits);
        let k = key(0);
        let (heavy, a, b, new) =
            (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        // `a` is the stalest on the key, but `heavy` holds more records.
        store.add_provider(record(k.clone(), a)).expect("add");
        store.add_provider(record(k.clone(), heavy)).expect("add");
        store.add_provider(record(key(1), heavy)).expect("add");
        store.add_provider(record(k.clone(), b)).expect("add");
        store.add_provider(record(k.clone(), new)).expect("add");
        check(&store);
        assert!(!has(&store, &k, heavy));
        for p in [a, b, new] {
            assert!(has(&store, &k, p));
        }
        // Among equals, the stalest goes.
        let newer = PeerId::random();
        store.add_provider(record(k.clone(), newer)).expect("add");
        check(&store);
        assert!(!has(&store, &k, a));
        for p in [b, new, newer] {
            assert!(has(&store, &k, p));
        }
    }

    #[test]
    fn a_full_store_keeps_the_fresh_record_of_a_light_provider() {
        let limits = Limits { max_records: 100, ..Limits::default() };
        let mut store = ProviderStore::new(PeerId::random(), limits);
        // Many peer ids, each at its limit: the store is full of junk.
        let mut i = 0;
        for _ in 0..10 {
            let p = PeerId::random();
            for _ in 0..limits.max_per_provider {
                store.add_provider(record(key(i), p)).expect("add");
                i += 1;
            }
        }
        check(&store);
        assert_eq!(store.by_age.len(), 100);
        let (real, k) = (PeerId::random(), key(1_000_000));
        store.add_provider(record(k.clone(), real)).expect("add");
        // More junk from fresh peer ids, one record each: the heavy ones pay for it.
        for _ in 0..50 {
            store.add_provider(record(key(i), PeerId::random())).expect("add");
            i += 1;
        }
        check(&store);
        assert!(has(&store, &k, real));
        assert_eq!(store.by_age.len(), 100);
    }

    #[test]
    fn a_refresh_updates_in_place_and_counts_as_fresh() {
        let limits = Limits { max_per_key: 2, ..Limits::default() };
        let mut store = ProviderStore::new(PeerId::random(), limits);
        let k = key(0);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        store.add_provider(record(k.clone(), a)).expect("add");
        store.add_provider(record(k.clone(), b)).expect("add");
        let mut again = record(k.clone(), a);
        again.addresses = vec!["/ip4/198.18.0.9/tcp/1".parse().expect("addr")];
        store.add_provider(again.clone()).expect("add");
        check(&store);
        assert_eq!(store.providers(&k).len(), 2);
        let stored = store.providers(&k).into_iter().find(|r| r.provider == a).expect("a");
        assert_eq!(stored.addresses, again.addresses);
        // `b` is now the stalest.
        store.add_provider(record(k.clone(), c)).expect("add");
        check(&store);
        assert!(has(&store, &k, a) && has(&store, &k, c) && !has(&store, &k, b));
    }

    #[test]
    fn expired_records_are_dropped_when_a_new_one_comes() {
        let mut store = ProviderStore::new(PeerId::random(), Limits::default());
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut old = record(key(0), a);
        old.expires = Some(Instant::now() - Duration::from_secs(1));
        store.add_provider(old).expect("add");
        store.add_provider(record(key(1), b)).expect("add");
        check(&store);
        assert!(!has(&store, &key(0), a) && !store.by_provider.contains_key(&a));
        assert!(has(&store, &key(1), b));
    }

    #[test]
    fn addresses_are_trimmed() {
        let mut store = ProviderStore::new(PeerId::random(), Limits::default());
        let mut r = record(key(0), PeerId::random());
        r.addresses =
            (0..50).map(|i| format!("/ip4/10.0.0.{i}/tcp/1").parse().expect("addr")).collect();
        store.add_provider(r.clone()).expect("add");
        let stored = &store.providers(&key(0))[0];
        assert_eq!(stored.addresses, r.addresses[..8]);
        // Long addresses: only as many as fit in the byte budget.
        let long: Multiaddr =
            format!("/dns4/{}.example/tcp/1", "a".repeat(200)).parse().expect("a");
        r.addresses = vec![long.clone(), long.clone(), long];
        store.add_provider(r.clone()).expect("add");
        let stored = &store.providers(&key(0))[0];
        assert_eq!(stored.addresses, r.addresses[..1]);
    }

    #[test]
    fn own_records_are_kept_apart_and_value_records_refused() {
        let me = PeerId::random();
        let limits = Limits { max_records: 1, max_per_key: 1, ..Limits::default() };
        let mut store = ProviderStore::new(me, limits);
        store.add_provider(record(key(0), me)).expect("add");
        store.add_provider(record(key(0), PeerId::random())).expect("add");
        store.add_provider(record(key(1), PeerId::random())).expect("add");
        check(&store);
        assert!(has(&store, &key(0), me));
        assert_eq!(store.provided().count(), 1);
        store.remove_provider(&key(0), &me);
        assert_eq!(store.provided().count(), 0);

        assert!(store.put(Record::new(key(0), b"value".to_vec())).is_err());
        assert!(store.get(&key(0)).is_none());
        assert_eq!(store.records().count(), 0);
    }

    #[test]
    fn remove_provider_keeps_the_indexes_consistent() {
        let mut store = ProviderStore::new(PeerId::random(), Limits::default());
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for i in 0..40 {
            store.add_provider(record(key(i % 7), peers[i % 4])).expect("add");
        }
        check(&store);
        for i in 0..7 {
            store.remove_provider(&key(i), &peers[i % 4]);
            check(&store);
        }
        for i in 0..7 {
            for p in &peers {
                store.remove_provider(&key(i), p);
            }
        }
        check(&store);
        assert!(store.by_age.is_empty() && store.by_provider.is_empty());
    }
}
