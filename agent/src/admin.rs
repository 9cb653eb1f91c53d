//! The admin socket: what `dnngovctl` asks the running agent, and the agent's answers.
//!
//! A separate socket from the apps' (default `/run/dnngov/admin.sock`, mode 0660, group
//! `dnngov`), so an app's permission to register does not give it the operator's powers.
//! One JSON request per connection, one JSON reply, then the agent closes it.
//!
//! The messages are `governor_proto::admin`'s (re-exported here) and the client side is
//! `dnngov_client::admin`; this module serves the socket and keeps the frequency hold
//! ([`Holds`]) that profilers ask for.

use crate::platform::{Actuator, Domain, Frequencies, Hz, Sysfs};
use crate::registry::AppHandle;
use crate::socket::bind_seqpacket;
use anyhow::{Context, Result};
pub use dnngov_client::admin::request;
pub use governor_proto::admin::*;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{accept4, recv, send, setsockopt, sockopt, MsgFlags, SockFlag};
use nix::sys::time::TimeVal;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `dnngovctl apps` shows of one registered app.
pub fn app_status(app: &AppHandle) -> AppStatus {
    let report = app.report();
    let target = app.target();
    let running = report.active_subnet.unwrap_or(report.requested_subnet);
    let miss_pct = if report.inferences_completed == 0 {
        0.0
    } else {
        100.0 * report.deadline_misses as f64 / report.inferences_completed as f64
    };
    AppStatus {
        app_id: app.app_id,
        name: app.name.clone(),
        pid: app.pid,
        deadline_ms: target.deadline_ms,
        accuracy_floor_pct: target.accuracy_floor_pct,
        priority: target.priority,
        operator_override: app.has_operator_target(),
        requested_subnet: report.requested_subnet,
        active_subnet: report.active_subnet,
        subnets: app.subnets.len(),
        accuracy_pct: app
            .subnets
            .iter()
            .find(|s| s.id == running)
            .map(|s| s.accuracy_pct),
        inferences: report.inferences_completed,
        deadline_misses: report.deadline_misses,
        miss_pct,
        last_latency_ms: report.last_latency_ns as f64 / 1e6,
    }
}

/// Answers admin requests; runs on the admin thread.
pub type Handler = Arc<dyn Fn(AdminRequest) -> AdminReply + Send + Sync>;

/// The admin socket's thread. Dropping it stops the thread and removes the socket.
pub struct AdminServer {
    waker: UnixStream,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl AdminServer {
    pub fn start(path: &Path, group: Option<&str>, handler: Handler) -> Result<Self> {
        let listener = bind_seqpacket(path, group)?;
        let (waker, wakee) = UnixStream::pair().context("creating the admin waker")?;
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || serve(listener, wakee, handler))
            .context("starting the admin thread")?;
        log::info!("admin socket on {}", path.display());
        Ok(Self {
            waker,
            thread: Some(thread),
            path: path.to_path_buf(),
        })
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = self.waker.write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: OwnedFd, mut wakee: UnixStream, handler: Handler) {
    let mut buffer = vec![0u8; MAX_ADMIN_PACKET + 1];
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wakee.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                log::error!("admin poll failed: {e}; the admin socket stops");
                return;
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let _ = wakee.read(&mut [0u8; 1]);
            return;
        }
        let raw = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => raw,
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => {
                log::warn!("admin accept failed: {e}");
                continue;
            }
        };
        // SAFETY: accept4 returned a new descriptor nobody else owns.
        let connection = unsafe { OwnedFd::from_raw_fd(raw) };
        // A client that connects and says nothing must not hold the admin thread.
        let timeout = TimeVal::new(1, 0);
        let _ = setsockopt(&connection, sockopt::ReceiveTimeout, &timeout);
        let _ = setsockopt(&connection, sockopt::SendTimeout, &timeout);
        let reply = match recv(connection.as_raw_fd(), &mut buffer, MsgFlags::MSG_TRUNC) {
            Ok(0) | Err(_) => continue,
            Ok(len) if len > MAX_ADMIN_PACKET => AdminReply::Error {
                message: format!("request of {len} bytes is larger than {MAX_ADMIN_PACKET}"),
            },
            Ok(len) => match serde_json::from_slice::<AdminRequest>(&buffer[..len]) {
                Ok(request) => handler(request),
                Err(e) => AdminReply::Error {
                    message: format!("invalid admin request: {e}"),
                },
            },
        };
        let bytes = serde_json::to_vec(&reply).expect("admin replies always serialise");
        if let Err(e) = send(connection.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
            log::warn!("cannot answer an admin request: {e}");
        }
    }
}

/// The frequency hold profilers ask for ([`AdminRequest::Hold`]), shared by the admin
/// thread, which sets and releases it, and the control thread, which applies it over the
/// policy's decision and ends it when its lease runs out. Cloning shares it.
#[derive(Clone)]
pub struct Holds {
    inner: Arc<HoldsInner>,
}

struct HoldsInner {
    /// The governed domains and their kinds; the index is the control loop's.
    domains: Vec<(Domain, DomainKind)>,
    /// Reads ceilings; never prepared, never writes.
    readers: Actuator,
    /// Whether a hold may be in force: the control thread's only cost while none is.
    active: AtomicBool,
    hold: Mutex<Option<ActiveHold>>,
}

struct ActiveHold {
    /// The frequency held, by domain index.
    freqs: BTreeMap<usize, Hz>,
    domains: Vec<HeldDomain>,
    lease_ms: u64,
    /// `CLOCK_MONOTONIC` nanoseconds.
    expires_ns: u64,
}

impl Holds {
    /// Holds over `domains` (index = the control loop's domain index).
    pub fn new(sysfs: Sysfs, domains: Vec<(Domain, DomainKind)>) -> Holds {
        let readers = Actuator::new(sysfs, domains.iter().map(|(d, _)| d.clone()).collect());
        Holds {
            inner: Arc::new(HoldsInner {
                domains,
                readers,
                active: AtomicBool::new(false),
                hold: Mutex::new(None),
            }),
        }
    }

    /// Puts a hold in force (replacing any before it) and says what was set. Each value
    /// is snapped to the nearest frequency its domain offers that is not above its ceiling
    /// now; a value outside every range of its kind, or a kind no governed domain has,
    /// is refused with the reason.
    pub fn hold(
        &self,
        cpu_hz: Option<u64>,
        gpu_hz: Option<u64>,
        mem_hz: Option<u64>,
        lease_ms: Option<u64>,
    ) -> Result<HoldStatus, String> {
        let lease_ms = lease_ms.unwrap_or(DEFAULT_HOLD_LEASE_MS);
        if !(MIN_HOLD_LEASE_MS..=MAX_HOLD_LEASE_MS).contains(&lease_ms) {
            return Err(format!(
                "lease_ms is {lease_ms}; it must be from {MIN_HOLD_LEASE_MS} to {MAX_HOLD_LEASE_MS} \
                 (renew a longer hold by sending it again)"
            ));
        }
        let wishes = [
            (DomainKind::Cpu, cpu_hz),
            (DomainKind::Gpu, gpu_hz),
            (DomainKind::Memory, mem_hz),
        ];
        if wishes.iter().all(|(_, wish)| wish.is_none()) {
            return Err("a hold names at least one of cpu_hz, gpu_hz, mem_hz".into());
        }
        let mut freqs = BTreeMap::new();
        let mut held = Vec::new();
        for (kind, wish) in wishes {
            let Some(wish) = wish else { continue };
            let indices: Vec<usize> = (0..self.inner.domains.len())
                .filter(|&i| self.inner.domains[i].1 == kind)
                .collect();
            if indices.is_empty() {
                return Err(self.no_domain(kind, wish));
            }
            let names = indices
                .iter()
                .map(|&i| self.inner.domains[i].0.id.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let low = indices
                .iter()
                .map(|&i| self.inner.domains[i].0.frequencies.lowest().0)
                .min()
                .expect("at least one domain");
            let high = indices
                .iter()
                .map(|&i| self.inner.domains[i].0.frequencies.highest().0)
                .max()
                .expect("at least one domain");
            if !(low..=high).contains(&wish) {
                return Err(format!(
                    "{} {wish} ({}) is outside the range of {names}: {} to {} ({low} to {high} Hz)",
                    kind.hold_field(),
                    mhz(wish),
                    mhz(low),
                    mhz(high)
                ));
            }
            for index in indices {
                let domain = &self.inner.domains[index].0;
                // Unreadable ceiling: the table's top; actuation caps at the ceiling anyway.
                let ceiling = self
                    .inner
                    .readers
                    .ceiling(domain)
                    .unwrap_or(domain.frequencies.highest());
                let hz = snap(&domain.frequencies, Hz(wish), ceiling);
                freqs.insert(index, hz);
                held.push(HeldDomain {
                    domain: domain.id.to_string(),
                    kind,
                    requested_hz: wish,
                    hz: hz.0,
                });
            }
        }
        let now = dnngov_bpf::Nanos::monotonic_now().0;
        let hold = ActiveHold {
            freqs,
            domains: held,
            lease_ms,
            expires_ns: now.saturating_add(lease_ms.saturating_mul(1_000_000)),
        };
        let status = hold.status(now);
        let mut current = lock(&self.inner.hold);
        let renewal = current
            .as_ref()
            .is_some_and(|h| now < h.expires_ns && h.freqs == hold.freqs);
        let level = if renewal {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "frequency hold for {:.1} s{}: {}",
            lease_ms as f64 / 1e3,
            if renewal { " (renewed)" } else { "" },
            list_held(&status.domains)
        );
        *current = Some(hold);
        drop(current);
        self.inner.active.store(true, Ordering::Release);
        Ok(status)
    }

    fn no_domain(&self, kind: DomainKind, wish: u64) -> String {
        let governed: Vec<String> = self
            .inner
            .domains
            .iter()
            .map(|(d, _)| d.id.to_string())
            .collect();
        let field = kind.hold_field();
        if governed.is_empty() {
            format!(
                "{field} {wish} cannot be held: dnngovd governs no frequency domain on this \
                 machine (the notes of `dnngovctl status` say why)"
            )
        } else {
            format!(
                "{field} {wish} cannot be held: no {kind} frequency domain is governed on this \
                 machine (governed: {})",
                governed.join(", ")
            )
        }
    }

    /// Ends the hold; returns what was held, if anything.
    pub fn release(&self) -> Option<Vec<HeldDomain>> {
        let released = lock(&self.inner.hold).take();
        self.inner.active.store(false, Ordering::Release);
        let now = dnngov_bpf::Nanos::monotonic_now().0;
        let released = released.filter(|h| now < h.expires_ns)?;
        log::info!("frequency hold released: {}", list_held(&released.domains));
        Some(released.domains)
    }

    /// The hold in force, if any.
    pub fn status(&self) -> Option<HoldStatus> {
        if !self.inner.active.load(Ordering::Acquire) {
            return None;
        }
        let now = dnngov_bpf::Nanos::monotonic_now().0;
        lock(&self.inner.hold)
            .as_ref()
            .filter(|h| now < h.expires_ns)
            .map(|h| h.status(now))
    }

    /// For the control loop: the frequencies held at `now_ns` (`CLOCK_MONOTONIC`), by
    /// domain index. Ends a hold whose lease has run out.
    pub fn held(&self, now_ns: u64) -> Option<BTreeMap<usize, Hz>> {
        if !self.inner.active.load(Ordering::Acquire) {
            return None;
        }
        let mut hold = lock(&self.inner.hold);
        match hold.as_ref() {
            Some(h) if now_ns < h.expires_ns => Some(h.freqs.clone()),
            Some(h) => {
                log::info!(
                    "frequency hold ended: its lease of {:.1} s ran out without renewal ({}); \
                     the policy sets those domains again",
                    h.lease_ms as f64 / 1e3,
                    list_held(&h.domains)
                );
                *hold = None;
                self.inner.active.store(false, Ordering::Release);
                None
            }
            None => None,
        }
    }

    /// Adds the hold to a status report: the hold itself, who sets each held domain and
    /// why, and a note.
    pub fn describe(&self, report: &mut StatusReport) {
        let Some(hold) = self.status() else {
            report.hold = None;
            return;
        };
        let until = utc_time(hold.expires_unix_s);
        for held in &hold.domains {
            if let Some(domain) = report.domains.iter_mut().find(|d| d.name == held.domain) {
                domain.set_by = match domain.set_by.strip_prefix("dnngov ") {
                    Some(how) => format!("hold {how}"),
                    None => format!("hold ({})", domain.set_by),
                };
                domain.reason = format!(
                    "held at {} (asked {}) until {until}, over the policy's choice",
                    mhz(held.hz),
                    mhz(held.requested_hz)
                );
            }
        }
        report.notes.push(format!(
            "frequency hold: {}; it ends at {until} ({:.1} s from now) unless renewed, or at \
             `dnngovctl release`",
            list_held(&hold.domains),
            hold.expires_in_ms as f64 / 1e3
        ));
        report.hold = Some(hold);
    }
}

impl ActiveHold {
    fn status(&self, now_ns: u64) -> HoldStatus {
        let left = Duration::from_nanos(self.expires_ns.saturating_sub(now_ns));
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        HoldStatus {
            domains: self.domains.clone(),
            lease_ms: self.lease_ms,
            expires_in_ms: left.as_millis() as u64,
            expires_unix_s: (wall + left).as_secs_f64(),
        }
    }
}

/// The frequency of `frequencies` nearest to `wish` that is not above `ceiling` (the
/// lowest when even that is above it); ties go to the lower.
fn snap(frequencies: &Frequencies, wish: Hz, ceiling: Hz) -> Hz {
    match frequencies {
        Frequencies::Table(table) => table
            .iter()
            .copied()
            .filter(|f| *f <= ceiling)
            .min_by_key(|f| (f.0.abs_diff(wish.0), f.0))
            .unwrap_or(table[0]),
        Frequencies::Range { min, max } => Hz(wish.0.min(ceiling.0).min(max.0).max(min.0)),
    }
}

fn mhz(hz: u64) -> String {
    format!("{} MHz", hz as f64 / 1e6)
}

fn list_held(domains: &[HeldDomain]) -> String {
    domains
        .iter()
        .map(|d| format!("{} at {}", d.domain, mhz(d.hz)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `HH:MM:SS UTC` of a Unix time.
fn utc_time(unix_s: f64) -> String {
    let seconds = unix_s.max(0.0) as u64 % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{fixture, Platform};

    fn xavier_holds(root: &Path) -> Holds {
        fixture::xavier_nx(root).unwrap();
        let sysfs = Sysfs::new(root);
        let plan = Platform::discover(sysfs.clone()).plan().unwrap();
        let domains = plan
            .domains
            .into_iter()
            .map(|d| {
                let kind = match &d.id {
                    crate::platform::DomainId::Cpu(_) => DomainKind::Cpu,
                    crate::platform::DomainId::Emc => DomainKind::Memory,
                    crate::platform::DomainId::Devfreq(_) => DomainKind::Gpu,
                };
                (d, kind)
            })
            .collect();
        Holds::new(sysfs, domains)
    }

    #[test]
    fn a_hold_snaps_to_the_table_and_ends_by_release_or_lease() {
        let dir = tempfile::tempdir().unwrap();
        let holds = xavier_holds(dir.path());
        assert!(holds.held(0).is_none());
        let status = holds
            .hold(None, Some(600_000_000), None, Some(1_000))
            .unwrap();
        assert_eq!(status.domains.len(), 1);
        assert_eq!(status.domains[0].hz, 599_250_000);
        assert_eq!(status.domains[0].requested_hz, 600_000_000);
        assert_eq!(status.lease_ms, 1_000);
        let now = dnngov_bpf::Nanos::monotonic_now().0;
        let held = holds.held(now).unwrap();
        assert_eq!(
            held.values().copied().collect::<Vec<_>>(),
            [Hz(599_250_000)]
        );
        // The lease runs out: the control loop's next look ends it.
        assert!(holds.held(now + 2_000_000_000).is_none());
        assert!(holds.status().is_none());

        holds.hold(Some(1_200_000_000), None, None, None).unwrap();
        let mut report = StatusReport::default();
        holds.describe(&mut report);
        let hold = report.hold.clone().unwrap();
        // Every CPU policy of the fixture is held.
        assert!(hold.domains.iter().all(|d| d.kind == DomainKind::Cpu));
        assert!(hold.domains.len() >= 2, "{hold:?}");
        assert!(hold.domains.iter().all(|d| d.hz == 1_190_400_000));
        assert_eq!(hold.lease_ms, DEFAULT_HOLD_LEASE_MS);
        assert!(report.notes[0].starts_with("frequency hold: cpufreq policy0 at 1190.4 MHz"));
        assert_eq!(holds.release().map(|d| d.len()), Some(hold.domains.len()));
        assert!(holds.release().is_none());
    }

    #[test]
    fn bad_holds_are_refused_with_the_domain_value_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let holds = xavier_holds(dir.path());
        let error = holds
            .hold(None, Some(5_000_000_000), None, None)
            .unwrap_err();
        assert_eq!(
            error,
            "gpu_hz 5000000000 (5000 MHz) is outside the range of devfreq 17000000.gv11b: \
             114.75 MHz to 1109.25 MHz (114750000 to 1109250000 Hz)"
        );
        let error = holds.hold(None, None, None, Some(30_000)).unwrap_err();
        assert!(error.contains("at least one"), "{error}");
        let error = holds
            .hold(None, Some(600_000_000), None, Some(10))
            .unwrap_err();
        assert!(error.starts_with("lease_ms is 10"), "{error}");
        assert!(holds.status().is_none(), "nothing is held after a refusal");

        let cpu_only = Holds::new(
            Sysfs::new(dir.path()),
            holds
                .inner
                .domains
                .iter()
                .filter(|(_, k)| *k == DomainKind::Cpu)
                .cloned()
                .collect(),
        );
        let error = cpu_only
            .hold(None, None, Some(1_600_000_000), None)
            .unwrap_err();
        assert!(
            error.starts_with("mem_hz 1600000000 cannot be held: no memory frequency domain"),
            "{error}"
        );
        assert!(error.contains("cpufreq policy0"), "{error}");
        let nothing = Holds::new(Sysfs::new(dir.path()), Vec::new());
        let error = nothing.hold(Some(1), None, None, None).unwrap_err();
        assert!(error.contains("governs no frequency domain"), "{error}");
    }

    #[test]
    fn snapping_never_goes_above_the_ceiling() {
        let table = Frequencies::Table(vec![Hz(100), Hz(200), Hz(300), Hz(400)]);
        assert_eq!(snap(&table, Hz(240), Hz(400)), Hz(200));
        assert_eq!(snap(&table, Hz(260), Hz(400)), Hz(300));
        assert_eq!(snap(&table, Hz(250), Hz(400)), Hz(200));
        assert_eq!(snap(&table, Hz(400), Hz(250)), Hz(200));
        assert_eq!(snap(&table, Hz(400), Hz(50)), Hz(100));
        let range = Frequencies::Range {
            min: Hz(100),
            max: Hz(400),
        };
        assert_eq!(snap(&range, Hz(333), Hz(400)), Hz(333));
        assert_eq!(snap(&range, Hz(333), Hz(300)), Hz(300));
    }
}
