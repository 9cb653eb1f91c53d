//! `dnngovctl top`: a live view of the running agent, polled over the admin socket.
//!
//! This module owns what the view remembers between polls and how it reacts to keys:
//! the last minute of each domain's frequency and each app's latency, frames per second
//! from successive inference counts, the sort order, the selected app, and the small
//! prompt that sets or clears an operator target. None of it touches a terminal, so all
//! of it is tested here; drawing lives in [`view`] and the terminal loop in [`terminal`].

pub mod terminal;
pub mod view;

use crate::admin::{AdminRequest, AppStatus, StatusReport};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// How often the view asks the agent for its status.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Samples kept per series: one minute at [`POLL_INTERVAL`].
pub const HISTORY_LEN: usize = 240;

/// The last [`HISTORY_LEN`] values of one figure, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    samples: VecDeque<f64>,
}

impl History {
    pub fn push(&mut self, value: f64) {
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(value);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.samples.is_empty())
            .then(|| self.samples.iter().sum::<f64>() / self.samples.len() as f64)
    }

    /// The nearest-rank 99th percentile of the samples kept.
    pub fn p99(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = (0.99 * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }

    /// The samples kept as at most `width` block characters, scaled from `floor` (the
    /// lowest block) to `ceiling` or the largest sample if that is higher (the full
    /// block). When there are more samples than characters, each character is the
    /// highest of an equal share of them, newest on the right, so the whole minute fits
    /// and a short peak still shows.
    pub fn sparkline(&self, width: usize, floor: f64, ceiling: f64) -> String {
        const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        if width == 0 {
            return String::new();
        }
        let per_block = self.samples.len().div_ceil(width).max(1);
        let samples: Vec<f64> = self.samples.iter().copied().collect();
        // Shares are counted from the newest sample, so the oldest share is the one cut
        // short.
        let mut shown: Vec<f64> = samples
            .rchunks(per_block)
            .map(|share| share.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            .collect();
        shown.reverse();
        let top = shown.iter().copied().fold(ceiling, f64::max);
        shown
            .iter()
            .map(|&v| {
                let span = top - floor;
                let level = if span > 0.0 {
                    (((v - floor) / span) * 7.0).round().clamp(0.0, 7.0) as usize
                } else {
                    // No range to scale in (a domain with one frequency): a flat line.
                    7
                };
                BLOCKS[level]
            })
            .collect()
    }
}

/// Inferences per second from two successive counts taken `elapsed` apart. A count that
/// went down belongs to a new registration (the agent restarted or the app registered
/// again), so there is no rate until the next poll.
pub fn frames_per_second(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    let seconds = elapsed.as_secs_f64();
    (after >= before && seconds > 0.0).then(|| (after - before) as f64 / seconds)
}

/// How far back frames per second look: long enough that an app at a few frames per
/// second does not read 0 whenever a poll falls between two of its inferences.
pub const RATE_WINDOW: Duration = Duration::from_secs(2);

/// What the view remembers of one app between polls.
#[derive(Debug, Clone, Default)]
struct AppMemory {
    latency_ms: History,
    /// (time of the poll, inference count) over the last [`RATE_WINDOW`], oldest first.
    counts: VecDeque<(Duration, u64)>,
}

impl AppMemory {
    /// Takes in the inference count of the poll at `now` (since the view started).
    fn count(&mut self, now: Duration, inferences: u64) {
        if self
            .counts
            .back()
            .is_some_and(|&(_, last)| inferences < last)
        {
            self.counts.clear();
        }
        self.counts.push_back((now, inferences));
        // Keep one poll at least RATE_WINDOW old, so the window is full.
        while self.counts.len() > 2 && now - self.counts[1].0 >= RATE_WINDOW {
            self.counts.pop_front();
        }
    }

    fn fps(&self) -> Option<f64> {
        let (&(t0, first), &(t1, last)) = (self.counts.front()?, self.counts.back()?);
        frames_per_second(first, last, t1 - t0)
    }
}

/// One app as the view shows it: the agent's row and what the view worked out.
#[derive(Debug, Clone)]
pub struct AppRow {
    pub status: AppStatus,
    pub latency_ms: History,
    pub fps: Option<f64>,
}

/// The columns `s` cycles through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    Name,
    Latency,
    P99,
    Misses,
    Fps,
}

impl SortColumn {
    pub fn next(self) -> SortColumn {
        match self {
            SortColumn::Name => SortColumn::Latency,
            SortColumn::Latency => SortColumn::P99,
            SortColumn::P99 => SortColumn::Misses,
            SortColumn::Misses => SortColumn::Fps,
            SortColumn::Fps => SortColumn::Name,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortColumn::Name => "name",
            SortColumn::Latency => "mean latency",
            SortColumn::P99 => "p99",
            SortColumn::Misses => "miss %",
            SortColumn::Fps => "frames/s",
        }
    }
}

/// Puts `rows` in the order of `column`: names A to Z, figures largest first (the app in
/// trouble on top), ties by app id so the order holds still between polls.
pub fn sort_rows(rows: &mut [AppRow], column: SortColumn) {
    let figure = |row: &AppRow| -> f64 {
        match column {
            SortColumn::Name => 0.0,
            SortColumn::Latency => row.latency_ms.mean().unwrap_or(f64::NEG_INFINITY),
            SortColumn::P99 => row.latency_ms.p99().unwrap_or(f64::NEG_INFINITY),
            SortColumn::Misses => row.status.miss_pct,
            SortColumn::Fps => row.fps.unwrap_or(f64::NEG_INFINITY),
        }
    };
    rows.sort_by(|a, b| {
        let order = match column {
            SortColumn::Name => a.status.name.cmp(&b.status.name),
            _ => figure(b).total_cmp(&figure(a)),
        };
        order.then(a.status.app_id.cmp(&b.status.app_id))
    });
}

/// What the last poll found.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    Up,
    /// The agent did not answer; the view keeps the last picture and keeps asking.
    Down(String),
}

/// Everything the view shows, updated by [`Top::observe`] and by keys.
#[derive(Debug, Clone)]
pub struct Top {
    pub status: Option<StatusReport>,
    pub link: Link,
    pub rows: Vec<AppRow>,
    pub domain_mhz: HashMap<String, History>,
    pub sort: SortColumn,
    /// The selected app, by id, so the selection follows it when the order changes.
    pub selected: Option<u32>,
    pub prompt: Prompt,
    /// The agent's answer to the last set or clear, or why it was refused.
    pub message: Option<String>,
    apps: HashMap<u32, AppMemory>,
    /// Time since the first poll, summed from the time between polls.
    clock: Duration,
}

impl Default for Top {
    fn default() -> Self {
        Top {
            status: None,
            link: Link::Connecting,
            rows: Vec::new(),
            domain_mhz: HashMap::new(),
            sort: SortColumn::Name,
            selected: None,
            prompt: Prompt::Idle,
            message: None,
            apps: HashMap::new(),
            clock: Duration::ZERO,
        }
    }
}

impl Top {
    /// Takes in one status report, polled `elapsed` after the one before.
    pub fn observe(&mut self, status: StatusReport, elapsed: Duration) {
        self.clock += elapsed;
        for domain in &status.domains {
            if let Some(hz) = domain.current_hz {
                self.domain_mhz
                    .entry(domain.name.clone())
                    .or_default()
                    .push(hz as f64 / 1e6);
            }
        }
        self.domain_mhz
            .retain(|name, _| status.domains.iter().any(|d| &d.name == name));
        let mut apps = HashMap::new();
        for app in &status.apps {
            let mut memory = self.apps.remove(&app.app_id).unwrap_or_default();
            let before = memory.counts.back().map(|&(_, count)| count);
            // The agent's latency is the app's last inference: only a new inference adds
            // a sample, or an idle app would fill its minute with one old figure.
            if app.inferences > 0 && before != Some(app.inferences) {
                memory.latency_ms.push(app.last_latency_ms);
            }
            memory.count(self.clock, app.inferences);
            apps.insert(app.app_id, memory);
        }
        self.apps = apps;
        self.rows = status
            .apps
            .iter()
            .map(|app| {
                let memory = &self.apps[&app.app_id];
                AppRow {
                    status: app.clone(),
                    latency_ms: memory.latency_ms.clone(),
                    fps: memory.fps(),
                }
            })
            .collect();
        sort_rows(&mut self.rows, self.sort);
        if !self
            .rows
            .iter()
            .any(|r| Some(r.status.app_id) == self.selected)
        {
            self.selected = self.rows.first().map(|r| r.status.app_id);
        }
        self.status = Some(status);
        self.link = Link::Up;
    }

    /// The agent did not answer this poll.
    pub fn unreachable(&mut self, why: String) {
        self.link = Link::Down(why);
    }

    pub fn cycle_sort(&mut self) {
        self.sort = self.sort.next();
        sort_rows(&mut self.rows, self.sort);
    }

    /// Moves the selection by `step` rows (negative: up), stopping at either end.
    pub fn move_selection(&mut self, step: isize) {
        if self.rows.is_empty() {
            self.selected = None;
            return;
        }
        let at = self
            .rows
            .iter()
            .position(|r| Some(r.status.app_id) == self.selected)
            .unwrap_or(0);
        let to = at.saturating_add_signed(step).min(self.rows.len() - 1);
        self.selected = Some(self.rows[to].status.app_id);
    }

    pub fn selected_row(&self) -> Option<&AppRow> {
        self.rows
            .iter()
            .find(|r| Some(r.status.app_id) == self.selected)
    }

    pub fn selected_index(&self) -> Option<usize> {
        self.rows
            .iter()
            .position(|r| Some(r.status.app_id) == self.selected)
    }
}

/// A key, as far as the view cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    Esc,
    Up,
    Down,
}

/// The prompt that sets or clears the selected app's target.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Idle,
    /// `t` pressed: typing a deadline in milliseconds.
    Deadline {
        app_id: u32,
        name: String,
        text: String,
        /// Why the last entry was not taken.
        problem: Option<String>,
    },
    /// A deadline typed: `y` sends it, `n` drops it.
    ConfirmDeadline {
        app_id: u32,
        name: String,
        deadline_ms: f64,
    },
    /// `c` pressed: `y` clears the operator's target.
    ConfirmClear {
        app_id: u32,
        name: String,
    },
}

/// What a key asks the view to do besides changing the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Send this request (what `dnngovctl set-target` sends).
    Send(AdminRequest),
}

impl Top {
    /// Reacts to one key.
    pub fn key(&mut self, key: Key) -> Action {
        let prompt = std::mem::replace(&mut self.prompt, Prompt::Idle);
        let (prompt, action) = match prompt {
            Prompt::Idle => return self.key_idle(key),
            Prompt::Deadline {
                app_id,
                name,
                mut text,
                problem,
            } => match key {
                Key::Esc => (Prompt::Idle, Action::None),
                Key::Backspace => {
                    text.pop();
                    let problem = None;
                    let prompt = Prompt::Deadline {
                        app_id,
                        name,
                        text,
                        problem,
                    };
                    (prompt, Action::None)
                }
                Key::Char(c) if (c.is_ascii_digit() || c == '.') && text.len() < 12 => {
                    text.push(c);
                    let prompt = Prompt::Deadline {
                        app_id,
                        name,
                        text,
                        problem: None,
                    };
                    (prompt, Action::None)
                }
                Key::Enter => match parse_deadline_ms(&text) {
                    Ok(deadline_ms) => (
                        Prompt::ConfirmDeadline {
                            app_id,
                            name,
                            deadline_ms,
                        },
                        Action::None,
                    ),
                    Err(why) => (
                        Prompt::Deadline {
                            app_id,
                            name,
                            text,
                            problem: Some(why),
                        },
                        Action::None,
                    ),
                },
                _ => (
                    Prompt::Deadline {
                        app_id,
                        name,
                        text,
                        problem,
                    },
                    Action::None,
                ),
            },
            Prompt::ConfirmDeadline {
                app_id,
                name,
                deadline_ms,
            } => match key {
                Key::Char('y') | Key::Char('Y') => (
                    Prompt::Idle,
                    Action::Send(AdminRequest::SetTarget {
                        app: app_id.to_string(),
                        deadline_ms: Some(deadline_ms),
                        accuracy_floor_pct: None,
                        clear: false,
                    }),
                ),
                Key::Char('n') | Key::Char('N') | Key::Esc => (Prompt::Idle, Action::None),
                _ => (
                    Prompt::ConfirmDeadline {
                        app_id,
                        name,
                        deadline_ms,
                    },
                    Action::None,
                ),
            },
            Prompt::ConfirmClear { app_id, name } => match key {
                Key::Char('y') | Key::Char('Y') => (
                    Prompt::Idle,
                    Action::Send(AdminRequest::SetTarget {
                        app: app_id.to_string(),
                        deadline_ms: None,
                        accuracy_floor_pct: None,
                        clear: true,
                    }),
                ),
                Key::Char('n') | Key::Char('N') | Key::Esc => (Prompt::Idle, Action::None),
                _ => (Prompt::ConfirmClear { app_id, name }, Action::None),
            },
        };
        self.prompt = prompt;
        action
    }

    fn key_idle(&mut self, key: Key) -> Action {
        match key {
            Key::Char('q') | Key::Esc => return Action::Quit,
            Key::Up | Key::Char('k') => self.move_selection(-1),
            Key::Down | Key::Char('j') => self.move_selection(1),
            Key::Char('s') => self.cycle_sort(),
            Key::Char('t') | Key::Char('c') => {
                let Some(row) = self.selected_row() else {
                    self.message = Some("no app selected".into());
                    return Action::None;
                };
                let (app_id, name) = (row.status.app_id, row.status.name.clone());
                self.message = None;
                self.prompt = if key == Key::Char('t') {
                    Prompt::Deadline {
                        app_id,
                        name,
                        text: String::new(),
                        problem: None,
                    }
                } else {
                    Prompt::ConfirmClear { app_id, name }
                };
            }
            _ => {}
        }
        Action::None
    }
}

/// A typed deadline. Only its form is checked here; the agent checks its range and its
/// refusal is shown as it is.
fn parse_deadline_ms(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        Ok(_) => Err("give a deadline above 0 ms".into()),
        Err(_) if text.is_empty() => Err("type a deadline in ms".into()),
        Err(_) => Err(format!("{text:?} is not a number of ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::DomainStatus;

    pub(crate) fn app(app_id: u32, name: &str, inferences: u64, latency_ms: f64) -> AppStatus {
        AppStatus {
            app_id,
            name: name.into(),
            pid: 1000 + app_id as i32,
            deadline_ms: 60.0,
            accuracy_floor_pct: None,
            priority: 0,
            operator_override: false,
            requested_subnet: 2,
            active_subnet: Some(2),
            subnets: 6,
            accuracy_pct: Some(76.13),
            inferences,
            deadline_misses: 0,
            miss_pct: 0.0,
            last_latency_ms: latency_ms,
            page_problem: None,
        }
    }

    pub(crate) fn status(apps: Vec<AppStatus>, gpu_hz: u64) -> StatusReport {
        StatusReport {
            domains: vec![DomainStatus {
                name: "devfreq gpu".into(),
                kind: None,
                current_hz: Some(gpu_hz),
                min_hz: 114_750_000,
                max_hz: 1_109_250_000,
                set_by: "dnngov".into(),
                reason: "detector needs it".into(),
            }],
            apps,
            ..StatusReport::default()
        }
    }

    const QUARTER: Duration = Duration::from_millis(250);

    #[test]
    fn history_keeps_the_last_minute_only() {
        let mut history = History::default();
        for i in 0..(HISTORY_LEN + 10) {
            history.push(i as f64);
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history.samples.front(), Some(&10.0));
    }

    #[test]
    fn p99_is_the_nearest_rank_and_mean_the_average() {
        let mut history = History::default();
        assert_eq!(history.p99(), None);
        for i in 1..=200 {
            history.push(i as f64);
        }
        assert_eq!(history.p99(), Some(198.0));
        assert_eq!(history.mean(), Some(100.5));
        let mut one = History::default();
        one.push(7.0);
        assert_eq!(one.p99(), Some(7.0));
    }

    #[test]
    fn sparkline_scales_from_the_floor_and_shows_the_newest() {
        let mut history = History::default();
        for v in [0.0, 100.0, 50.0, 100.0] {
            history.push(v);
        }
        assert_eq!(history.sparkline(10, 0.0, 0.0), "▁█▅█");
        assert_eq!(
            history.sparkline(2, 0.0, 0.0),
            "██",
            "the highest of each half"
        );
        assert_eq!(history.sparkline(0, 0.0, 0.0), "");
        assert_eq!(
            history.sparkline(10, 0.0, 200.0),
            "▁▅▃▅",
            "up to the ceiling"
        );
        let mut flat = History::default();
        flat.push(3.0);
        flat.push(3.0);
        assert_eq!(flat.sparkline(5, 3.0, 3.0), "██");
        assert_eq!(History::default().sparkline(5, 0.0, 1.0), "");
    }

    #[test]
    fn a_full_minute_fits_the_width_and_a_short_peak_still_shows() {
        let mut history = History::default();
        for i in 0..HISTORY_LEN {
            history.push(if i == 100 { 10.0 } else { 1.0 });
        }
        let line = history.sparkline(20, 0.0, 10.0);
        assert_eq!(line.chars().count(), 20);
        assert_eq!(line.chars().filter(|&c| c == '█').count(), 1, "{line}");
        assert!(line.starts_with('▂'), "{line}");
    }

    #[test]
    fn frames_per_second_from_successive_counts() {
        assert_eq!(frames_per_second(100, 104, QUARTER), Some(16.0));
        assert_eq!(frames_per_second(100, 100, QUARTER), Some(0.0));
        assert_eq!(frames_per_second(100, 3, QUARTER), None, "a new count");
        assert_eq!(frames_per_second(1, 2, Duration::ZERO), None);
    }

    #[test]
    fn observing_polls_gives_rates_and_latency_samples_per_new_inference() {
        let mut top = Top::default();
        top.observe(
            status(vec![app(1, "detector", 10, 50.0)], 600_000_000),
            QUARTER,
        );
        assert_eq!(top.link, Link::Up);
        assert_eq!(top.rows[0].fps, None, "no rate from one count");
        top.observe(
            status(vec![app(1, "detector", 14, 52.0)], 700_000_000),
            QUARTER,
        );
        assert_eq!(top.rows[0].fps, Some(16.0));
        assert_eq!(top.rows[0].latency_ms.len(), 2);
        // No new inference: no new latency sample, and a rate of 0.
        top.observe(
            status(vec![app(1, "detector", 14, 52.0)], 700_000_000),
            QUARTER,
        );
        assert_eq!(top.rows[0].latency_ms.len(), 2);
        assert_eq!(top.rows[0].fps, Some(8.0), "4 inferences in 0.5 s");
        assert_eq!(top.domain_mhz["devfreq gpu"].len(), 3);
        top.unreachable("dnngovd is not running".into());
        assert_eq!(top.link, Link::Down("dnngovd is not running".into()));
        assert_eq!(top.rows.len(), 1, "the last picture stays");
    }

    #[test]
    fn frames_per_second_look_back_over_the_rate_window_and_restart_on_a_new_count() {
        let mut top = Top::default();
        // An app at 2 frames/s: most polls see no new inference, the rate stays 2.
        for poll in 0..40u64 {
            top.observe(status(vec![app(1, "slow", poll / 2, 50.0)], 1), QUARTER);
        }
        let fps = top.rows[0].fps.unwrap();
        assert!((fps - 2.0).abs() < 0.3, "{fps}");
        assert!(top.apps[&1].counts.len() <= 10, "only the window is kept");
        // The agent restarted: the count went down, no rate until a second poll.
        top.observe(status(vec![app(1, "slow", 1, 50.0)], 1), QUARTER);
        assert_eq!(top.rows[0].fps, None);
        top.observe(status(vec![app(1, "slow", 3, 50.0)], 1), QUARTER);
        assert_eq!(top.rows[0].fps, Some(8.0));
    }

    #[test]
    fn an_app_that_leaves_is_forgotten_and_the_selection_moves_on() {
        let mut top = Top::default();
        let both = vec![app(1, "a", 1, 1.0), app(2, "b", 1, 1.0)];
        top.observe(status(both, 1), QUARTER);
        top.move_selection(1);
        assert_eq!(top.selected, Some(2));
        top.observe(status(vec![app(1, "a", 2, 1.0)], 1), QUARTER);
        assert_eq!(top.selected, Some(1));
        assert!(!top.apps.contains_key(&2));
    }

    #[test]
    fn sorting_cycles_and_puts_the_worst_first_with_the_selection_following() {
        let mut top = Top::default();
        let mut slow = app(1, "zeta", 1, 90.0);
        slow.miss_pct = 1.0;
        let mut missing = app(2, "alpha", 1, 40.0);
        missing.miss_pct = 30.0;
        top.observe(status(vec![slow, missing], 1), QUARTER);
        let names =
            |top: &Top| -> Vec<String> { top.rows.iter().map(|r| r.status.name.clone()).collect() };
        assert_eq!(names(&top), ["alpha", "zeta"]);
        assert_eq!(top.selected, Some(2));
        top.key(Key::Char('s'));
        assert_eq!(top.sort, SortColumn::Latency);
        assert_eq!(names(&top), ["zeta", "alpha"]);
        assert_eq!(
            top.selected_index(),
            Some(1),
            "the selection follows its app"
        );
        top.key(Key::Char('s'));
        top.key(Key::Char('s'));
        assert_eq!(top.sort, SortColumn::Misses);
        assert_eq!(names(&top), ["alpha", "zeta"]);
        top.key(Key::Up);
        top.key(Key::Up);
        assert_eq!(top.selected_index(), Some(0), "stops at the top");
        top.key(Key::Down);
        top.key(Key::Down);
        assert_eq!(top.selected_index(), Some(1), "stops at the bottom");
    }

    #[test]
    fn the_target_prompt_asks_for_a_deadline_then_confirmation() {
        let mut top = Top::default();
        top.observe(status(vec![app(3, "detector", 1, 1.0)], 1), QUARTER);
        assert_eq!(top.key(Key::Char('t')), Action::None);
        for c in "4x5".chars() {
            top.key(Key::Char(c));
        }
        top.key(Key::Backspace);
        top.key(Key::Char('.'));
        top.key(Key::Char('5'));
        assert!(matches!(&top.prompt, Prompt::Deadline { text, .. } if text == "4.5"));
        // q is typed into the prompt, not taken as quit.
        assert_eq!(top.key(Key::Char('q')), Action::None);
        top.key(Key::Enter);
        assert_eq!(
            top.prompt,
            Prompt::ConfirmDeadline {
                app_id: 3,
                name: "detector".into(),
                deadline_ms: 4.5
            }
        );
        assert_eq!(
            top.key(Key::Char('y')),
            Action::Send(AdminRequest::SetTarget {
                app: "3".into(),
                deadline_ms: Some(4.5),
                accuracy_floor_pct: None,
                clear: false
            })
        );
        assert_eq!(top.prompt, Prompt::Idle);
    }

    #[test]
    fn the_prompt_refuses_an_empty_or_zero_deadline_and_n_or_esc_cancel() {
        let mut top = Top::default();
        top.observe(status(vec![app(3, "detector", 1, 1.0)], 1), QUARTER);
        top.key(Key::Char('t'));
        top.key(Key::Enter);
        assert!(
            matches!(&top.prompt, Prompt::Deadline { problem: Some(p), .. } if p.contains("type"))
        );
        top.key(Key::Char('0'));
        top.key(Key::Enter);
        assert!(
            matches!(&top.prompt, Prompt::Deadline { problem: Some(p), .. } if p.contains("above 0"))
        );
        top.key(Key::Backspace);
        top.key(Key::Char('5'));
        top.key(Key::Enter);
        assert_eq!(top.key(Key::Char('n')), Action::None);
        assert_eq!(top.prompt, Prompt::Idle);
        top.key(Key::Char('t'));
        assert_eq!(top.key(Key::Esc), Action::None, "Esc leaves the prompt");
        assert_eq!(top.prompt, Prompt::Idle);
        assert_eq!(top.key(Key::Esc), Action::Quit, "and then quits");
    }

    #[test]
    fn c_clears_the_override_after_confirmation() {
        let mut top = Top::default();
        top.observe(status(vec![app(3, "detector", 1, 1.0)], 1), QUARTER);
        top.key(Key::Char('c'));
        assert_eq!(top.key(Key::Char('x')), Action::None, "waits for y or n");
        assert_eq!(
            top.key(Key::Char('y')),
            Action::Send(AdminRequest::SetTarget {
                app: "3".into(),
                deadline_ms: None,
                accuracy_floor_pct: None,
                clear: true
            })
        );
    }

    #[test]
    fn without_apps_t_says_so_and_q_quits() {
        let mut top = Top::default();
        assert_eq!(top.key(Key::Char('t')), Action::None);
        assert_eq!(top.prompt, Prompt::Idle);
        assert_eq!(top.message.as_deref(), Some("no app selected"));
        assert_eq!(top.key(Key::Char('q')), Action::Quit);
    }
}
