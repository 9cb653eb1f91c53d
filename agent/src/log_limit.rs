//! Rate limiting of the warnings that peers can cause (a refused message, a connection
//! over the limits, a registration that never came), so that a client sending garbage as
//! fast as it can does not flood the journal.
//!
//! Per peer (uid) and per kind of event, the first [`LogLimiter::FIRST`] events of a
//! window of [`LogLimiter::WINDOW`] are logged as they happen; the rest are counted, and
//! one line gives the count (and the last of them) when the window ends. The next window
//! starts again with the first few, so a peer that stops and starts again later is heard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What caused a warning, for counting: the peer's uid and a short name of the kind.
type Key = (u32, &'static str);

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
    last: String,
}

/// Counts and thins out warnings per (uid, kind); see the module's comment.
pub struct LogLimiter {
    windows: BTreeMap<Key, Window>,
    first: u32,
    window: Duration,
    /// The log target its lines go out under: the module that reports.
    target: &'static str,
}

impl LogLimiter {
    /// Events of one kind from one peer logged as they happen, per window.
    pub const FIRST: u32 = 3;
    /// How long a window lasts: at most one line of counts per peer and kind this often.
    pub const WINDOW: Duration = Duration::from_secs(10);
    /// Windows tracked at once; past this many peers and kinds, the oldest are summed
    /// up at once and forgotten, so the table stays bounded whoever connects.
    const MAX_WINDOWS: usize = 256;

    /// A limiter of [`LogLimiter::FIRST`] per [`LogLimiter::WINDOW`] logging under
    /// `target` (`module_path!()` of its user).
    pub fn for_target(target: &'static str) -> Self {
        Self::new(Self::FIRST, Self::WINDOW, target)
    }

    pub fn new(first: u32, window: Duration, target: &'static str) -> Self {
        Self {
            windows: BTreeMap::new(),
            first,
            window,
            target,
        }
    }

    /// Logs `message()` at WARN when it is among the first few of its window, else
    /// counts it. The message is only built when needed.
    pub fn warn(
        &mut self,
        uid: u32,
        kind: &'static str,
        now: Instant,
        message: impl FnOnce() -> String,
    ) {
        if let Some(line) = self.note(uid, kind, now, message) {
            log::warn!(target: self.target, "{line}");
        }
    }

    /// [`LogLimiter::warn`] without the logging: the line to log now, if any.
    pub fn note(
        &mut self,
        uid: u32,
        kind: &'static str,
        now: Instant,
        message: impl FnOnce() -> String,
    ) -> Option<String> {
        let key = (uid, kind);
        if let Some(window) = self.windows.get(&key) {
            if now.saturating_duration_since(window.started) >= self.window {
                let ended = self.windows.remove(&key).expect("looked up above");
                if let Some(line) = summary(key, &ended, now) {
                    log::warn!(target: self.target, "{line}");
                }
            }
        } else if self.windows.len() >= Self::MAX_WINDOWS {
            self.evict_oldest(now);
        }
        let window = self.windows.entry(key).or_insert_with(|| Window {
            started: now,
            logged: 0,
            suppressed: 0,
            last: String::new(),
        });
        if window.logged < self.first {
            window.logged += 1;
            let mut line = message();
            if window.logged == self.first {
                line.push_str(&format!(
                    " (more of these from uid {uid} are counted, not logged, for the next {} s)",
                    self.window.as_secs()
                ));
            }
            Some(line)
        } else {
            window.suppressed += 1;
            window.last = message();
            None
        }
    }

    /// Ends the windows that are over, logging their counts. Call it now and then (at
    /// [`LogLimiter::next_flush`]), so the count of a flood that stopped is not lost.
    pub fn flush(&mut self, now: Instant) {
        for line in self.expire(now) {
            log::warn!(target: self.target, "{line}");
        }
    }

    /// [`LogLimiter::flush`] without the logging: the lines of counts.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let over: Vec<Key> = self
            .windows
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.started) >= self.window)
            .map(|(key, _)| *key)
            .collect();
        over.into_iter()
            .filter_map(|key| {
                let window = self.windows.remove(&key)?;
                summary(key, &window, now)
            })
            .collect()
    }

    /// When the next window ends with something to report, if any does.
    pub fn next_flush(&self) -> Option<Instant> {
        self.windows
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.started + self.window)
            .min()
    }

    fn evict_oldest(&mut self, now: Instant) {
        let Some(key) = self
            .windows
            .iter()
            .min_by_key(|(_, w)| w.started)
            .map(|(key, _)| *key)
        else {
            return;
        };
        if let Some(window) = self.windows.remove(&key) {
            if let Some(line) = summary(key, &window, now) {
                log::warn!(target: self.target, "{line}");
            }
        }
    }
}

fn summary((uid, kind): Key, window: &Window, now: Instant) -> Option<String> {
    (window.suppressed > 0).then(|| {
        format!(
            "{} more {kind} from uid {uid} in the last {:.0} s were not logged; the last: {}",
            window.suppressed,
            now.saturating_duration_since(window.started).as_secs_f64(),
            window.last
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_few_then_one_count_per_window_per_peer_and_kind() {
        let mut limiter = LogLimiter::new(3, Duration::from_secs(10), "test");
        let start = Instant::now();
        let mut lines = Vec::new();
        for i in 0..1000 {
            let at = start + Duration::from_millis(i);
            lines.extend(limiter.note(1000, "refused messages", at, || format!("garbage {i}")));
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], "garbage 0");
        assert!(
            lines[2].starts_with("garbage 2 (more of these from uid 1000"),
            "{}",
            lines[2]
        );
        // Another peer, and another kind from the same peer, have windows of their own.
        assert!(limiter
            .note(1001, "refused messages", start, || "b".into())
            .is_some());
        assert!(limiter
            .note(1000, "idle connections", start, || "c".into())
            .is_some());
        assert_eq!(limiter.next_flush(), Some(start + Duration::from_secs(10)));
        assert!(limiter.expire(start + Duration::from_secs(9)).is_empty());
        let counts = limiter.expire(start + Duration::from_secs(10));
        assert_eq!(counts.len(), 1, "{counts:?}");
        assert!(
            counts[0].starts_with("997 more refused messages from uid 1000 in the last 10 s"),
            "{}",
            counts[0]
        );
        assert!(
            counts[0].ends_with("the last: garbage 999"),
            "{}",
            counts[0]
        );
        // A new window starts with the first few again.
        let later = start + Duration::from_secs(11);
        assert!(limiter
            .note(1000, "refused messages", later, || "again".into())
            .is_some());
        assert_eq!(
            limiter.next_flush(),
            None,
            "nothing counted yet in the new windows"
        );
    }

    #[test]
    fn a_window_that_ends_while_events_still_come_reports_its_count_then() {
        let mut limiter = LogLimiter::new(1, Duration::from_secs(1), "test");
        let start = Instant::now();
        assert!(limiter.note(5, "k", start, || "one".into()).is_some());
        assert!(limiter.note(5, "k", start, || "two".into()).is_none());
        // The next event, after the window, starts a new one and is logged itself.
        let later = start + Duration::from_secs(2);
        assert_eq!(
            limiter.note(5, "k", later, || "three".into()).as_deref(),
            Some("three (more of these from uid 5 are counted, not logged, for the next 1 s)")
        );
        assert!(
            limiter.expire(later).is_empty(),
            "the old window's count went out already"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut limiter = LogLimiter::new(1, Duration::from_secs(60), "test");
        let start = Instant::now();
        for uid in 0..10_000 {
            limiter.note(uid, "k", start + Duration::from_micros(uid.into()), || {
                String::new()
            });
        }
        assert!(limiter.windows.len() <= LogLimiter::MAX_WINDOWS);
    }
}
