//! [`History`]: the one checker of a staleness bound over recorded reads and writes.
//!
//! A test numbers the states of what it watches (a row's versions 1, 2, 3…; "signed in" 0
//! and "signed out" 1), records each write's version when its commit has returned, and each
//! read's version with the instant the read *began*. The rule: every read returns a version
//! no older than the newest write that completed before (its start − Δ). Completion is
//! recorded after the commit returned, so a write counts only once it surely committed: the
//! check never blames a read for a write it could not have seen.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes and reads of one watched value; see the module docs.
#[derive(Debug)]
pub struct History {
    name: String,
    delta: Duration,
    writes: Mutex<Vec<(u64, Instant)>>,
    reads: Mutex<Vec<(Instant, u64, String)>>,
}

impl History {
    /// An empty history checked against the bound `delta`.
    pub fn new(delta: Duration) -> Self {
        Self::named("the history", delta)
    }

    /// An empty history called `name` in its report, checked against the bound `delta`.
    pub fn named(name: &str, delta: Duration) -> Self {
        Self {
            name: name.to_owned(),
            delta,
            writes: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
        }
    }

    /// Version `version` was committed (its commit returned) now.
    pub fn wrote(&self, version: u64) {
        self.writes.lock().unwrap().push((version, Instant::now()));
    }

    /// A read that began at `began` returned `version`; `who` names it in a violation.
    pub fn read(&self, began: Instant, version: u64, who: &str) {
        self.reads
            .lock()
            .unwrap()
            .push((began, version, who.to_owned()));
    }

    /// The number of reads recorded.
    pub fn reads(&self) -> usize {
        self.reads.lock().unwrap().len()
    }

    /// Every read that broke the rule, described.
    pub fn violations(&self) -> Vec<String> {
        let writes = self.writes.lock().unwrap();
        let reads = self.reads.lock().unwrap();
        let first = writes.iter().map(|(_, at)| *at).min();
        reads
            .iter()
            .filter_map(|(began, got, who)| {
                let bound = began.checked_sub(self.delta)?;
                let required = writes
                    .iter()
                    .filter(|(_, at)| *at < bound)
                    .map(|(v, _)| *v)
                    .max()?;
                (*got < required).then(|| {
                    format!(
                        "{who}: read version {got} beginning {:?} after the first write, when \
                         version {required} had been committed for more than {:?}",
                        first.map(|f| began.saturating_duration_since(f)),
                        self.delta
                    )
                })
            })
            .collect()
    }

    /// Panics with the first violations, if any.
    ///
    /// # Panics
    /// When a read was staler than the bound.
    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "{}: {} of {} reads were staler than {:?}: {:#?}",
            self.name,
            violations.len(),
            self.reads(),
            self.delta,
            &violations[..violations.len().min(5)]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_is_judged_by_the_writes_completed_delta_before_it_began() {
        let h = History::new(Duration::from_millis(50));
        let start = Instant::now();
        h.wrote(1);
        h.read(Instant::now(), 0, "early");
        std::thread::sleep(Duration::from_millis(60));
        h.read(Instant::now(), 1, "fresh");
        h.read(Instant::now(), 0, "stale");
        h.read(start, 0, "before the write");
        let violations = h.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].starts_with("stale"));
    }
}
