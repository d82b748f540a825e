//! Dedupe of task ids over a time window, pure (no Kafka, no clock: every call takes `now_ms`).
//!
//! A task id is a duplicate when it was already admitted within the window with a replay
//! generation at least as high. A replay (`octo-replay-generation` greater than the one seen)
//! is admitted and raises the remembered generation.
//!
//! The stream admits a whole batch inside one Kafka transaction, so admissions are *staged*
//! first (visible to later records of the same batch) and only become committed state when the
//! transaction commits; an abort drops them, so the redelivered batch is not judged against its
//! own aborted first attempt. Restart safety comes from the stream replaying the compacted
//! `octo.reflex.dedupe` topic into [`DedupeWindow::load`] (see docs/reflex.md).

use std::collections::{HashMap, VecDeque};

/// What is remembered about an admitted task id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Highest replay generation admitted.
    pub generation: i32,
    /// When it was admitted (ms since the epoch); the window counts from here.
    pub seen_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not seen in the window, or a higher generation than the one seen: admit it.
    Fresh,
    /// Seen within the window at this generation (≥ the incoming one).
    Duplicate { seen_generation: i32, seen_at: i64 },
}

#[derive(Debug, Clone)]
pub struct DedupeWindow {
    window_ms: i64,
    max_entries: usize,
    committed: HashMap<String, Entry>,
    /// Admission order of committed entries, for expiry and for evicting the oldest when full.
    /// May hold stale pairs (an entry refreshed later); they are skipped when popped.
    order: VecDeque<(i64, String)>,
    staged: HashMap<String, Entry>,
    evicted: u64,
}

impl DedupeWindow {
    /// `window_ms` ≤ 0 disables dedupe (every task is fresh, nothing is remembered).
    pub fn new(window_ms: i64, max_entries: usize) -> DedupeWindow {
        DedupeWindow {
            window_ms,
            max_entries: max_entries.max(1),
            committed: HashMap::new(),
            order: VecDeque::new(),
            staged: HashMap::new(),
            evicted: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    fn current(&self, task_id: &str) -> Option<&Entry> {
        self.staged
            .get(task_id)
            .or_else(|| self.committed.get(task_id))
    }

    /// Is `task_id` at `generation` a duplicate at `now_ms`? Does not change anything.
    pub fn check(&self, task_id: &str, generation: i32, now_ms: i64) -> Check {
        if !self.enabled() {
            return Check::Fresh;
        }
        match self.current(task_id) {
            Some(e) if now_ms - e.seen_at < self.window_ms && generation <= e.generation => {
                Check::Duplicate {
                    seen_generation: e.generation,
                    seen_at: e.seen_at,
                }
            }
            _ => Check::Fresh,
        }
    }

    /// Stage an admission (visible to [`check`](Self::check) at once, kept only on commit).
    pub fn admit(&mut self, task_id: &str, generation: i32, now_ms: i64) {
        if !self.enabled() {
            return;
        }
        // a replay never lowers what was seen, even when the older entry expired
        let generation = self
            .current(task_id)
            .map_or(generation, |e| e.generation.max(generation));
        self.staged.insert(
            task_id.to_string(),
            Entry {
                generation,
                seen_at: now_ms,
            },
        );
    }

    /// The transaction committed: staged admissions become state; expire and bound the map.
    pub fn commit(&mut self, now_ms: i64) {
        for (id, e) in self.staged.drain() {
            self.order.push_back((e.seen_at, id.clone()));
            self.committed.insert(id, e);
        }
        self.expire(now_ms);
    }

    /// The transaction aborted: forget what it staged.
    pub fn rollback(&mut self) {
        self.staged.clear();
    }

    /// Remember an admission read back at start-up (already committed on Kafka). Entries
    /// outside the window are ignored; a lower generation never replaces a higher one.
    pub fn load(&mut self, task_id: &str, generation: i32, seen_at: i64, now_ms: i64) {
        if !self.enabled() || now_ms - seen_at >= self.window_ms {
            return;
        }
        let e = self.committed.entry(task_id.to_string()).or_insert(Entry {
            generation,
            seen_at,
        });
        if generation > e.generation || (generation == e.generation && seen_at > e.seen_at) {
            *e = Entry {
                generation,
                seen_at,
            };
        }
        self.order.push_back((seen_at, task_id.to_string()));
    }

    /// Call after a batch of [`load`](Self::load)s: records read back are not in time order.
    pub fn finish_load(&mut self, now_ms: i64) {
        self.order.make_contiguous().sort_unstable();
        self.expire(now_ms);
    }

    /// Drop entries older than the window, then the oldest while over `max_entries`.
    fn expire(&mut self, now_ms: i64) {
        while let Some((ts, id)) = self.order.front() {
            let live = self.committed.get(id).is_some_and(|e| e.seen_at == *ts);
            let expired = now_ms - *ts >= self.window_ms;
            let over = self.committed.len() > self.max_entries;
            if live && !expired && !over {
                break;
            }
            let (ts, id) = self.order.pop_front().expect("front exists");
            if live {
                self.committed.remove(&id);
                if !expired {
                    self.evicted += 1;
                }
            }
            let _ = ts;
        }
        // stale pairs of refreshed ids pile up only as fast as replays; keep `order` bounded
        if self.order.len() > 2 * self.max_entries + 1024 {
            let committed = &self.committed;
            self.order
                .retain(|(ts, id)| committed.get(id).is_some_and(|e| e.seen_at == *ts));
        }
    }

    /// Committed entries.
    pub fn len(&self) -> usize {
        self.committed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.committed.is_empty()
    }

    /// Entries dropped because the map was full (not because they expired).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

/// Parse a duration like `24h`, `90m`, `30s`, `1500ms`, `2d` or a bare number of seconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 24h, 30m, 45s, 500ms)"))?;
    let mult = match unit.trim() {
        "" | "s" => 1_000.0,
        "ms" => 1.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
    };
    Ok((n * mult).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn duplicate_within_window_then_expires() {
        let mut d = DedupeWindow::new(24 * H, 100);
        assert_eq!(d.check("a", 0, 0), Check::Fresh);
        d.admit("a", 0, 0);
        d.commit(0);
        assert!(matches!(d.check("a", 0, H), Check::Duplicate { .. }));
        assert!(matches!(
            d.check("a", 0, 24 * H - 1),
            Check::Duplicate { .. }
        ));
        assert_eq!(d.check("a", 0, 24 * H), Check::Fresh);
        d.commit(24 * H);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn staged_is_visible_within_the_batch_and_dropped_on_rollback() {
        let mut d = DedupeWindow::new(H, 100);
        d.admit("a", 0, 10);
        assert!(matches!(d.check("a", 0, 11), Check::Duplicate { .. }));
        d.rollback();
        assert_eq!(d.check("a", 0, 12), Check::Fresh);
        assert!(d.is_empty());
    }

    #[test]
    fn higher_generation_is_a_replay_not_a_duplicate() {
        let mut d = DedupeWindow::new(H, 100);
        d.admit("a", 0, 0);
        d.commit(0);
        assert_eq!(d.check("a", 1, 5), Check::Fresh);
        d.admit("a", 1, 5);
        d.commit(5);
        assert_eq!(
            d.check("a", 1, 6),
            Check::Duplicate {
                seen_generation: 1,
                seen_at: 5
            }
        );
        // an older generation arriving late is a duplicate too
        assert!(matches!(d.check("a", 0, 7), Check::Duplicate { .. }));
        assert_eq!(d.check("a", 2, 8), Check::Fresh);
    }

    #[test]
    fn refreshed_entry_survives_expiry_of_its_old_slot() {
        let mut d = DedupeWindow::new(100, 100);
        d.admit("a", 0, 0);
        d.commit(0);
        d.admit("a", 1, 60);
        d.commit(60);
        d.commit(120); // the slot from t=0 expires, the t=60 one does not
        assert!(matches!(d.check("a", 1, 130), Check::Duplicate { .. }));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn max_entries_evicts_the_oldest() {
        let mut d = DedupeWindow::new(H, 3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            d.admit(id, 0, i as i64);
            d.commit(i as i64);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.evicted(), 1);
        assert_eq!(d.check("a", 0, 10), Check::Fresh);
        assert!(matches!(d.check("d", 0, 10), Check::Duplicate { .. }));
    }

    #[test]
    fn load_keeps_the_highest_generation_and_skips_old_entries() {
        let mut d = DedupeWindow::new(H, 100);
        let now = 10 * H;
        d.load("a", 2, now - 10, now);
        d.load("a", 0, now - 5, now);
        d.load("old", 0, now - 2 * H, now);
        d.finish_load(now);
        assert_eq!(d.len(), 1);
        assert!(matches!(d.check("a", 2, now), Check::Duplicate { .. }));
        assert_eq!(d.check("a", 3, now), Check::Fresh);
        assert_eq!(d.check("old", 0, now), Check::Fresh);
    }

    #[test]
    fn disabled_window_admits_everything() {
        let mut d = DedupeWindow::new(0, 10);
        d.admit("a", 0, 0);
        d.commit(0);
        assert_eq!(d.check("a", 0, 1), Check::Fresh);
        assert!(d.is_empty());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h").unwrap(), 24 * H);
        assert_eq!(parse_duration_ms("90m").unwrap(), 90 * 60_000);
        assert_eq!(parse_duration_ms("1500ms").unwrap(), 1500);
        assert_eq!(parse_duration_ms("30").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("3w").is_err());
    }
}
