//! systemd's readiness and watchdog notifications (`sd_notify`), without libsystemd:
//! one datagram to `$NOTIFY_SOCKET` per message. Outside systemd they do nothing.

use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Sends `message` (e.g. "READY=1") to systemd if it is listening.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name.as_bytes()),
        None => UnixAddr::new(path.as_str()),
    };
    let result = addr.and_then(|addr| {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        sendto(fd.as_raw_fd(), message.as_bytes(), &addr, MsgFlags::empty())
    });
    if let Err(e) = result {
        log::warn!("cannot notify systemd on {path}: {e}");
    }
}

/// How often to send WATCHDOG=1: half the unit's `WatchdogSec`, when it has one.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
