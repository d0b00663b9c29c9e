//! Per-partition offset tracking for at-least-once consumption: the offset to commit
//! is the lowest offset still in flight (or one past the last one handed out), so a
//! failed or slow message blocks its partition's progress and a later completion never
//! skips it. Pure; the Kafka source wraps it in a mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A topic and partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct Partition {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset handed to the pipeline.
    next: Option<i64>,
    /// The last offset given to `store` (to store only changes).
    stored: Option<i64>,
}

/// In-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<TopicPartition, Partition>,
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// `offset` of `tp` entered the pipeline.
    pub fn begin(&mut self, tp: &TopicPartition, offset: i64) {
        let p = self.parts.entry(tp.clone()).or_default();
        p.in_flight.insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Every alert of `offset` was accepted by every sink (or dead-lettered).
    pub fn complete(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.in_flight.remove(&offset);
        }
    }

    /// The offset to commit for `tp`: the next message to read after a restart.
    pub fn committable(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.parts.get(tp)?;
        p.in_flight.first().copied().or(p.next)
    }

    /// Committable offsets that changed since the last call (marks them stored).
    pub fn to_store(&mut self) -> BTreeMap<TopicPartition, i64> {
        let mut out = BTreeMap::new();
        for (tp, p) in &mut self.parts {
            let c = p.in_flight.first().copied().or(p.next);
            if let Some(c) = c {
                if p.stored != Some(c) {
                    p.stored = Some(c);
                    out.insert(tp.clone(), c);
                }
            }
        }
        out
    }

    /// Committable offsets of the given partitions (for a synchronous commit).
    pub fn committable_of<'a>(
        &self,
        tps: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> BTreeMap<TopicPartition, i64> {
        tps.into_iter()
            .filter_map(|tp| self.committable(tp).map(|c| (tp.clone(), c)))
            .collect()
    }

    /// Messages in flight in the given partitions (all partitions when `None`).
    pub fn in_flight(&self, only: Option<&[TopicPartition]>) -> usize {
        self.parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .map(|(_, p)| p.in_flight.len())
            .sum()
    }

    /// Forget a partition (after it was revoked and committed).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        ("posts".into(), 0)
    }

    #[test]
    fn commit_is_the_next_offset_to_read() {
        let mut t = Tracker::new();
        for o in 10..15 {
            t.begin(&tp(), o);
        }
        assert_eq!(
            t.committable(&tp()),
            Some(10),
            "nothing done yet: re-read from 10"
        );
        t.complete(&tp(), 10);
        assert_eq!(t.committable(&tp()), Some(11));
        // 12..14 done but 11 still in flight: 11 blocks the partition.
        for o in 12..15 {
            t.complete(&tp(), o);
        }
        assert_eq!(t.committable(&tp()), Some(11));
        t.complete(&tp(), 11);
        assert_eq!(
            t.committable(&tp()),
            Some(15),
            "all done: the one after the last"
        );
    }

    #[test]
    fn to_store_reports_changes_only() {
        let mut t = Tracker::new();
        t.begin(&tp(), 0);
        assert_eq!(t.to_store().get(&tp()), Some(&0));
        assert!(t.to_store().is_empty());
        t.complete(&tp(), 0);
        assert_eq!(t.to_store().get(&tp()), Some(&1));
    }

    #[test]
    fn in_flight_counts_per_partition() {
        let mut t = Tracker::new();
        let other = ("posts".to_string(), 1);
        t.begin(&tp(), 0);
        t.begin(&other, 7);
        assert_eq!(t.in_flight(None), 2);
        assert_eq!(t.in_flight(Some(std::slice::from_ref(&other))), 1);
        t.forget(&other);
        assert_eq!(t.in_flight(None), 1);
    }
}
