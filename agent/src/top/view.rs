//! Draws a [`Top`] into a ratatui frame. Laid out for 80x24 first: one line of agent and
//! power, the domains, the apps, a line on the selected app, and a line of keys or of the
//! prompt. Colour only marks what already reads without it (a `*` override, a miss
//! percentage), so `NO_COLOR` loses nothing.

use super::{Link, Prompt, SortColumn, Top};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Styles, with or without colour.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub colour: bool,
}

impl Palette {
    fn heading(self) -> Style {
        let style = Style::default().add_modifier(Modifier::BOLD);
        if self.colour {
            style.fg(Color::Cyan)
        } else {
            style
        }
    }

    fn alarm(self) -> Style {
        if self.colour {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }

    fn spark(self) -> Style {
        if self.colour {
            Style::default().fg(Color::Green)
        } else {
            Style::default()
        }
    }

    fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

fn mhz(hz: u64) -> String {
    format!("{:.0}", hz as f64 / 1e6)
}

fn or_dash(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

/// Keeps the first `width` characters.
fn fit(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

pub fn draw(frame: &mut Frame, top: &Top, palette: Palette) {
    let area = frame.area();
    let lines = lines(top, palette, area.width as usize, area.height as usize);
    frame.render_widget(Paragraph::new(lines), area);
}

/// The screen as lines, `height` at most.
pub fn lines(top: &Top, palette: Palette, width: usize, height: usize) -> Vec<Line<'static>> {
    let mut head = vec![agent_line(top, palette)];
    if let Some(power) = power_line(top) {
        head.push(Line::from(power));
    }
    let domains = top.status.as_ref().map_or(0, |s| s.domains.len());
    let rows = top.rows.len().max(1);
    // Keys, selected app, apps heading, domains heading, and a line for any message.
    let fixed = head.len() + 4 + usize::from(top.message.is_some());
    let why_lines = fixed + 2 * domains + rows <= height;
    let mut out = head;
    out.extend(domain_lines(top, palette, width, why_lines));
    let mut foot = vec![Line::from(selected_line(top))];
    if let Some(message) = &top.message {
        foot.push(Line::from(Span::styled(message.clone(), palette.alarm())));
    }
    foot.push(prompt_line(top, palette));
    // The keys, the answer to the last key and the selected app matter most, then the
    // apps: the domains give way first on a short terminal.
    out.truncate(height.saturating_sub(foot.len() + 2));
    let app_room = height.saturating_sub(out.len() + foot.len() + 1);
    out.extend(app_lines(top, palette, width, app_room));
    while out.len() + foot.len() < height {
        out.push(Line::default());
    }
    out.extend(foot);
    out.truncate(height);
    out
}

fn agent_line(top: &Top, palette: Palette) -> Line<'static> {
    let mut spans = Vec::new();
    if let Some(s) = &top.status {
        spans.push(Span::styled(
            format!("dnngovd {} pid {} up {:.0} s", s.version, s.pid, s.uptime_s),
            palette.heading(),
        ));
        if let Some(energy) = &s.energy {
            spans.push(Span::raw(format!(
                ", board {:.1} J since start ({})",
                energy.joules,
                if energy.estimated {
                    "estimated"
                } else {
                    "measured"
                }
            )));
        }
        if s.hold.is_some() {
            spans.push(Span::styled("  HOLD in force", palette.alarm()));
        }
    } else {
        spans.push(Span::styled("dnngovctl top", palette.heading()));
    }
    match &top.link {
        Link::Up => {}
        Link::Connecting => spans.push(Span::raw("  asking dnngovd...")),
        Link::Down(why) => spans.push(Span::styled(
            format!("  UNREACHABLE (retrying): {why}"),
            palette.alarm(),
        )),
    }
    Line::from(spans)
}

fn power_line(top: &Top) -> Option<String> {
    let s = top.status.as_ref()?;
    if s.power.is_empty() {
        return Some("power: no sensor and no estimate".into());
    }
    let all_estimated = s.power.iter().all(|r| r.estimated);
    let mixed = !all_estimated && s.power.iter().any(|r| r.estimated);
    let mut text = String::from(if all_estimated {
        "power (estimated):"
    } else {
        "power (measured):"
    });
    for rail in &s.power {
        text += &format!(
            " {} {:.2} W{}",
            rail.rail,
            rail.watts,
            if mixed && rail.estimated {
                " (est.)"
            } else {
                ""
            }
        );
    }
    Some(text)
}

fn domain_lines(top: &Top, palette: Palette, width: usize, why: bool) -> Vec<Line<'static>> {
    let Some(s) = &top.status else {
        return Vec::new();
    };
    let mut out = vec![Line::styled(
        format!(
            "{:<22} {:>5} {:>9} {:<18} last minute",
            "domain", "MHz", "min-max", "set by"
        ),
        palette.heading(),
    )];
    let spark_width = width.saturating_sub(59).clamp(1, 40);
    for d in &s.domains {
        let spark = top.domain_mhz.get(&d.name).map_or(String::new(), |h| {
            h.sparkline(spark_width, d.min_hz as f64 / 1e6, d.max_hz as f64 / 1e6)
        });
        let now = d.current_hz.map_or("-".into(), mhz);
        let mut spans = vec![Span::raw(format!(
            "{:<22} {:>5} {:>9} {:<18} ",
            fit(&d.name, 22),
            now,
            format!("{}-{}", mhz(d.min_hz), mhz(d.max_hz)),
            fit(&d.set_by, 18),
        ))];
        spans.push(Span::styled(spark, palette.spark()));
        if !why {
            spans.push(Span::raw(format!(" {}", d.reason)));
        }
        out.push(Line::from(spans));
        if why {
            out.push(Line::from(format!("  why: {}", d.reason)));
        }
    }
    if s.domains.is_empty() {
        out.push(Line::from("  no domain governed"));
    }
    out
}

/// The apps' heading and as many rows as `room` holds, scrolled to keep the selection.
fn app_lines(top: &Top, palette: Palette, width: usize, room: usize) -> Vec<Line<'static>> {
    let mark = |column: SortColumn, label: &str| {
        if top.sort == column {
            format!("{label}▼")
        } else {
            label.to_string()
        }
    };
    let mut out = vec![Line::styled(
        format!(
            " {:<12} {:>7} {:>3} {:>5} {:>5} {:>5} {:>6} {:>5} {:>5} latency",
            mark(SortColumn::Name, "app"),
            "pid",
            "sub",
            "acc%",
            mark(SortColumn::Latency, "mean"),
            mark(SortColumn::P99, "p99"),
            "dl ms",
            mark(SortColumn::Misses, "miss%"),
            mark(SortColumn::Fps, "fps"),
        ),
        palette.heading(),
    )];
    if top.rows.is_empty() {
        out.push(Line::from("  no app registered"));
    }
    let spark_width = width.saturating_sub(64).max(1);
    let room = room.max(1);
    let first = top
        .selected_index()
        .map_or(0, |at| (at + 1).saturating_sub(room));
    for row in top.rows.iter().skip(first).take(room) {
        let app = &row.status;
        let subnet = match app.active_subnet {
            Some(active) if active == app.requested_subnet => active.to_string(),
            Some(active) => format!("{active}>{}", app.requested_subnet),
            None => format!("?>{}", app.requested_subnet),
        };
        let p99 = row.latency_ms.p99();
        let late = p99.is_some_and(|p| p > app.deadline_ms);
        let selected = Some(app.app_id) == top.selected;
        let base = if selected {
            palette.selected()
        } else {
            Style::default()
        };
        let text = format!(
            "{}{:<12} {:>7} {:>3} {:>5} {:>5} ",
            if app.page_problem.is_some() { '!' } else { ' ' },
            fit(&app.name, 12),
            app.pid,
            fit(&subnet, 3),
            or_dash(app.accuracy_pct, 1),
            or_dash(row.latency_ms.mean(), 1),
        );
        let mut spans = vec![Span::styled(text, base)];
        let p99_text = format!("{:>5}", or_dash(p99, 1));
        spans.push(Span::styled(
            p99_text,
            if late {
                base.patch(palette.alarm())
            } else {
                base
            },
        ));
        spans.push(Span::styled(
            format!(
                " {:>5.1}{} ",
                app.deadline_ms,
                if app.operator_override { '*' } else { ' ' }
            ),
            base,
        ));
        spans.push(Span::styled(
            format!("{:>5.1}", app.miss_pct),
            if app.miss_pct > 0.0 {
                base.patch(palette.alarm())
            } else {
                base
            },
        ));
        spans.push(Span::styled(format!(" {:>5} ", or_dash(row.fps, 1)), base));
        spans.push(Span::styled(
            row.latency_ms.sparkline(spark_width, 0.0, app.deadline_ms),
            base.patch(palette.spark()),
        ));
        out.push(Line::from(spans));
    }
    out
}

fn selected_line(top: &Top) -> String {
    let Some(row) = top.selected_row() else {
        return String::new();
    };
    let app = &row.status;
    let mut text = format!(
        "{}: last {:.1} ms, sub-network {} of {}, deadline {} ms ({})",
        app.name,
        app.last_latency_ms,
        app.active_subnet.map_or("?".into(), |s| s.to_string()),
        app.subnets,
        app.deadline_ms,
        if app.operator_override {
            "operator"
        } else {
            "app's own"
        }
    );
    if let Some(floor) = app.accuracy_floor_pct {
        text += &format!(", floor {floor}%");
    }
    if let Some(problem) = &app.page_problem {
        text += &format!("; page: {problem}");
    }
    text
}

fn prompt_line(top: &Top, palette: Palette) -> Line<'static> {
    let text = match &top.prompt {
        Prompt::Idle => format!(
            "q quit  up/down select  s sort ({})  t set deadline  c clear override",
            top.sort.label()
        ),
        Prompt::Deadline {
            name,
            text,
            problem,
            ..
        } => {
            let mut line = format!("deadline for {name} (ms, Enter, Esc cancels): {text}_");
            if let Some(problem) = problem {
                line += &format!("  {problem}");
            }
            line
        }
        Prompt::ConfirmDeadline {
            name, deadline_ms, ..
        } => format!("set {name}'s deadline to {deadline_ms} ms? y/n"),
        Prompt::ConfirmClear { name, .. } => {
            format!("clear the operator's target for {name}? y/n")
        }
    };
    Line::styled(text, palette.selected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::RailStatus;
    use crate::top::tests::{app, status};
    use crate::top::Key;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use std::time::Duration;

    fn screen(top: &Top, colour: bool) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal
            .draw(|frame| draw(frame, top, Palette { colour }))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    fn two_apps() -> Top {
        let mut top = Top::default();
        let mut report = status(
            vec![app(1, "detector", 10, 51.0), app(2, "segmenter", 5, 30.0)],
            600_000_000,
        );
        report.power = vec![RailStatus {
            rail: "VDD_IN".into(),
            watts: 4.5,
            joules: 12.0,
            estimated: true,
        }];
        for _ in 0..3 {
            top.observe(report.clone(), Duration::from_millis(250));
            for app in &mut report.apps {
                app.inferences += 4;
            }
        }
        top
    }

    #[test]
    fn an_80_by_24_screen_shows_domains_apps_power_and_keys() {
        let top = two_apps();
        let text = screen(&top, false).join("\n");
        for expected in [
            "devfreq gpu",
            "detector",
            "segmenter",
            "power (estimated): VDD_IN 4.50 W",
            "q quit",
            "why: detector needs it",
            "16.0",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn without_colour_no_cell_has_a_colour() {
        let mut top = two_apps();
        top.rows[0].status.miss_pct = 10.0;
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal
            .draw(|frame| draw(frame, &top, Palette { colour: false }))
            .unwrap();
        let buffer = terminal.backend().buffer();
        assert!(buffer
            .content
            .iter()
            .all(|cell| cell.fg == Color::Reset && cell.bg == Color::Reset));
    }

    #[test]
    fn many_apps_scroll_to_keep_the_selection_and_the_keys_in_view() {
        let mut top = Top::default();
        let apps = (1..=30)
            .map(|i| app(i, &format!("app{i:02}"), 1, 1.0))
            .collect();
        top.observe(status(apps, 1), Duration::from_millis(250));
        for _ in 0..25 {
            top.key(Key::Down);
        }
        top.message = Some("dnngovd refused: no".into());
        let text = screen(&top, false);
        assert!(text.iter().any(|l| l.starts_with(" app26 ")), "{text:#?}");
        assert!(!text.iter().any(|l| l.starts_with(" app01 ")), "{text:#?}");
        assert!(text[23].starts_with("q quit"), "{text:#?}");
        assert!(text[22].starts_with("dnngovd refused: no"), "{text:#?}");
        assert!(text[21].starts_with("app26: last"), "{text:#?}");
    }

    #[test]
    fn an_unreachable_agent_and_the_prompt_are_shown() {
        let mut top = two_apps();
        top.unreachable("dnngovd is not running".into());
        top.key(Key::Char('t'));
        top.key(Key::Char('4'));
        let text = screen(&top, true).join("\n");
        assert!(
            text.contains("UNREACHABLE (retrying): dnngovd is not running"),
            "{text}"
        );
        assert!(
            text.contains("deadline for detector (ms, Enter, Esc cancels): 4_"),
            "{text}"
        );
        assert!(text.contains("detector"), "the last picture stays:\n{text}");
    }
}
