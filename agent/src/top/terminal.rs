//! The terminal side of `dnngovctl top`: raw mode and the alternate screen (given back on
//! exit, on panic and on SIGTERM, SIGHUP or SIGQUIT), a thread that polls the agent so a slow or absent agent never
//! freezes the keys, and the loop that joins the two.

use super::view::{self, Palette};
use super::{Action, Key, Top, POLL_INTERVAL};
use crate::admin::{AdminReply, AdminRequest, StatusReport};
use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use dnngov_client::admin::request_with_timeout;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one poll waits for the agent. Polls never overlap (the next starts after this
/// one ends), so a slow agent only makes them rarer.
const POLL_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long a set or clear waits for the agent's answer.
const SET_TIMEOUT: Duration = Duration::from_secs(2);

/// How often keys are looked at while no poll arrives.
const KEY_WAIT: Duration = Duration::from_millis(50);

/// Whether `TERM` names a terminal that cannot move the cursor.
pub fn dumb_terminal(term: Option<&str>) -> bool {
    matches!(term, Some("dumb"))
}

/// Whether colour is wanted: `NO_COLOR` set to anything but the empty string turns it off
/// (https://no-color.org).
pub fn colour_wanted(no_color: Option<&std::ffi::OsStr>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

/// Runs the view until `q`; the terminal is given back however it ends.
pub fn run(admin_socket: &Path) -> Result<()> {
    if dumb_terminal(std::env::var("TERM").ok().as_deref()) {
        bail!(
            "top needs a terminal that can move the cursor, and TERM=dumb cannot; \
             use `dnngovctl status` (or `--json status`) instead"
        );
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("top needs a terminal on stdin and stdout; use `dnngovctl status` instead");
    }
    let palette = Palette {
        colour: colour_wanted(std::env::var_os("NO_COLOR").as_deref()),
    };
    restore_on_signals()?;
    let polls = spawn_poller(admin_socket.to_path_buf());
    // try_init installs a panic hook that gives the terminal back before the message.
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = event_loop(&mut terminal, admin_socket, &polls, palette);
    ratatui::restore();
    result
}

/// A `kill`, or the end of an SSH session, must not leave the terminal raw on the
/// alternate screen: SIGTERM, SIGHUP and SIGQUIT are blocked here, before any other thread
/// starts (threads inherit the mask), and one thread waits for them, gives the terminal
/// back and exits as the signal would have (128 + its number).
fn restore_on_signals() -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("blocking SIGTERM, SIGHUP and SIGQUIT")?;
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            ratatui::restore();
            std::process::exit(128 + signal as i32);
        }
    });
    Ok(())
}

type Poll = (Instant, Result<StatusReport, String>);

/// Polls every [`POLL_INTERVAL`] with a plain status request (the one `dnngovctl status`
/// sends), and stops when the view is gone.
fn spawn_poller(admin_socket: PathBuf) -> Receiver<Poll> {
    let (tx, rx) = crossbeam_channel::bounded(4);
    std::thread::spawn(move || {
        let mut next = Instant::now();
        loop {
            let reply = request_with_timeout(&admin_socket, &AdminRequest::Status, POLL_TIMEOUT);
            let result = match reply {
                Ok(AdminReply::Status(report)) => Ok(report),
                Ok(AdminReply::Error { message }) => Err(format!("dnngovd refused: {message}")),
                Ok(_) => Err("dnngovd answered something other than a status".into()),
                Err(e) => Err(e.to_string()),
            };
            if tx.send((Instant::now(), result)).is_err() {
                return;
            }
            // Catch-up protection: after a slow poll, start again from now rather than
            // firing the missed polls back to back.
            next = (next + POLL_INTERVAL).max(Instant::now());
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    rx
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    admin_socket: &Path,
    polls: &Receiver<Poll>,
    palette: Palette,
) -> Result<()> {
    let mut top = Top::default();
    let mut last_poll: Option<Instant> = None;
    loop {
        terminal
            .draw(|frame| view::draw(frame, &top, palette))
            .context("drawing")?;
        match polls.recv_timeout(KEY_WAIT) {
            Ok((at, Ok(report))) => {
                let elapsed = last_poll.map_or(POLL_INTERVAL, |before| at - before);
                last_poll = Some(at);
                top.observe(report, elapsed);
            }
            Ok((_, Err(why))) => top.unreachable(why),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("the polling thread ended"),
        }
        while event::poll(Duration::ZERO).context("reading the keyboard")? {
            let Event::Key(press) = event::read().context("reading the keyboard")? else {
                continue;
            };
            if press.kind != KeyEventKind::Press {
                continue;
            }
            // Raw mode turns Ctrl-C into a key; it still means stop.
            if press.modifiers.contains(KeyModifiers::CONTROL) && press.code == KeyCode::Char('c') {
                return Ok(());
            }
            let key = match press.code {
                KeyCode::Char(c) => Key::Char(c),
                KeyCode::Enter => Key::Enter,
                KeyCode::Backspace => Key::Backspace,
                KeyCode::Esc => Key::Esc,
                KeyCode::Up => Key::Up,
                KeyCode::Down => Key::Down,
                _ => continue,
            };
            match top.key(key) {
                Action::None => {}
                Action::Quit => return Ok(()),
                Action::Send(request) => top.message = Some(send(admin_socket, &request)),
            }
        }
    }
}

/// Sends a set or clear and words the answer, a refusal included, for the message line.
fn send(admin_socket: &Path, request: &AdminRequest) -> String {
    match request_with_timeout(admin_socket, request, SET_TIMEOUT) {
        Ok(AdminReply::Done { message }) => message,
        Ok(AdminReply::Error { message }) => format!("dnngovd refused: {message}"),
        Ok(_) => "dnngovd answered something unexpected".into(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn no_color_set_to_anything_but_empty_turns_colour_off() {
        assert!(colour_wanted(None));
        assert!(colour_wanted(Some(OsStr::new(""))));
        assert!(!colour_wanted(Some(OsStr::new("1"))));
    }

    #[test]
    fn only_a_dumb_term_is_refused() {
        assert!(dumb_terminal(Some("dumb")));
        assert!(!dumb_terminal(Some("xterm-256color")));
        assert!(!dumb_terminal(None));
    }
}
