//! The admin socket: what `dnngovctl` asks the running agent, and the agent's answers.
//!
//! A separate socket from the apps' (default `/run/dnngov/admin.sock`, mode 0660, group
//! `dnngov`). One JSON request per connection, one JSON reply, then the agent closes it.
//! Whoever may connect may read (status, apps); changing anything (hold, release, another
//! user's target) takes root, the agent's own user or the admin group ([`Access`]), and an
//! app's owner may change that app's target.
//!
//! One thread serves every connection by polling them together, each with a deadline, so
//! a client that connects and says nothing delays nobody else; connections are bounded
//! in all and per user.
//!
//! The messages are `governor_proto::admin`'s (re-exported here) and the client side is
//! `dnngov_client::admin`; this module serves the socket and keeps the frequency hold
//! ([`Holds`]) that profilers ask for.

use crate::log_limit::LogLimiter;
use crate::peer::Peer;
use crate::platform::{Actuator, Domain, Frequencies, Hz, Sysfs};
use crate::registry::AppHandle;
use crate::socket::{bind_seqpacket, hung_up, timeout_until};
use anyhow::{Context, Result};
pub use dnngov_client::admin::request;
pub use governor_proto::admin::*;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::socket::{accept4, recv, send, MsgFlags, SockFlag};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a connection may take to send its request.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Admin connections open at once ...
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// ... and per user, so one user's silent connections leave room for everyone else's.
pub const MAX_ADMIN_CONNECTIONS_PER_UID: usize = 8;

/// What `dnngovctl apps` shows of one registered app.
pub fn app_status(app: &AppHandle) -> AppStatus {
    let report = app.report();
    let target = app.target();
    let running = report.active_subnet.unwrap_or(report.requested_subnet);
    // The report's misses are never above its inferences: this stays within 0..=100.
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
        page_problem: report.problems.describe(&report),
    }
}

/// Who may change things through the admin socket. Reading (status, apps) is open to
/// whoever may connect, which the socket's group decides.
#[derive(Debug, Clone)]
pub struct Access {
    /// The user the agent runs as: it may do anything, as root may.
    pub own_uid: u32,
    /// The admin group, when one is configured and exists.
    pub admin_gid: Option<u32>,
    /// Its configured name ("" for none), for messages.
    pub admin_group: String,
}

impl Access {
    /// The access of an agent running as the current user with admin group `group`
    /// (`""`: none, only root and the agent's user). A group that does not exist is
    /// logged, and then only root and the agent's user may change things.
    pub fn new(group: &str) -> Access {
        let own_uid = nix::unistd::geteuid().as_raw();
        let admin_gid = if group.is_empty() {
            None
        } else {
            match nix::unistd::Group::from_name(group) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                Ok(None) => {
                    log::info!(
                        "admin group {group} does not exist: only root and user {} may hold, \
                         release, or set another user's app target",
                        crate::peer::user_name(own_uid)
                    );
                    None
                }
                Err(e) => {
                    log::warn!(
                        "cannot look up the admin group {group}: {e}; only root and user {} \
                         may hold, release, or set another user's app target",
                        crate::peer::user_name(own_uid)
                    );
                    None
                }
            }
        };
        Access {
            own_uid,
            admin_gid,
            admin_group: group.to_string(),
        }
    }

    /// Whether `peer` may change anything: root, the agent's own user, or a member of
    /// the admin group.
    pub fn is_admin(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || peer.uid == self.own_uid
            || self.admin_gid.is_some_and(|g| peer.in_group(g))
    }

    /// Why `peer` may not `what`, for the refusal.
    pub fn denied(&self, peer: &Peer, what: &str) -> String {
        let own = crate::peer::user_name(self.own_uid);
        let who = match (self.admin_group.as_str(), self.admin_gid) {
            ("", _) => format!("root or user {own}"),
            (group, Some(_)) => format!("root, user {own} or a member of group {group}"),
            (group, None) => format!(
                "root or user {own} (the admin group {group} does not exist on this machine)"
            ),
        };
        format!(
            "permission denied: {what} is for {who}, and {} is not",
            crate::peer::user_name(peer.uid)
        )
    }
}

/// Who sent a request, and whether they may change things.
#[derive(Debug, Clone)]
pub struct Caller {
    pub peer: Peer,
    /// Root, the agent's user or the admin group: may do anything.
    pub admin: bool,
}

/// Answers admin requests; runs on the admin thread. Hold and release reach it only from
/// admins; a target change from anyone who may connect, for it to check that the caller
/// owns the app ([`Caller::admin`] otherwise).
pub type Handler = Arc<dyn Fn(AdminRequest, &Caller) -> AdminReply + Send + Sync>;

/// The admin socket's thread. Dropping it stops the thread and removes the socket.
pub struct AdminServer {
    waker: UnixStream,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl AdminServer {
    pub fn start(
        path: &Path,
        group: Option<&str>,
        access: Access,
        handler: Handler,
    ) -> Result<Self> {
        let listener = bind_seqpacket(path, group)?;
        let (waker, wakee) = UnixStream::pair().context("creating the admin waker")?;
        let mut server = Server {
            listener,
            wakee,
            access,
            handler,
            connections: Vec::new(),
            limiter: LogLimiter::for_target(module_path!()),
            buffer: vec![0u8; MAX_ADMIN_PACKET + 1],
        };
        let thread = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || server.run())
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

struct Connection {
    fd: OwnedFd,
    peer: Peer,
    deadline: Instant,
}

struct Server {
    listener: OwnedFd,
    wakee: UnixStream,
    access: Access,
    handler: Handler,
    connections: Vec<Connection>,
    limiter: LogLimiter,
    buffer: Vec<u8>,
}

impl Server {
    fn run(&mut self) {
        loop {
            // Poll set: [waker, listener, then every connection].
            let mut fds = Vec::with_capacity(2 + self.connections.len());
            fds.push(PollFd::new(self.wakee.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for connection in &self.connections {
                fds.push(PollFd::new(connection.fd.as_fd(), PollFlags::POLLIN));
            }
            let wake_at = self
                .connections
                .iter()
                .map(|c| c.deadline)
                .chain(self.limiter.next_flush())
                .min();
            match poll(&mut fds, timeout_until(wake_at)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    log::error!("admin poll failed: {e}; the admin socket stops");
                    return;
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                let _ = self.wakee.read(&mut [0u8; 1]);
                return;
            }
            // Each connection that spoke is answered and closed; in reverse, so that
            // removing one leaves the indices of those still to visit as they were.
            for index in (0..self.connections.len()).rev() {
                if ready[2 + index] {
                    let connection = self.connections.swap_remove(index);
                    self.answer(connection);
                }
            }
            let now = Instant::now();
            self.connections.retain(|c| {
                if now < c.deadline {
                    return true;
                }
                log::debug!(
                    "closed an admin connection of pid {} (uid {}) that sent nothing within {} s",
                    c.peer.pid,
                    c.peer.uid,
                    ADMIN_REQUEST_TIMEOUT.as_secs_f64()
                );
                false
            });
            self.limiter.flush(now);
            if ready[1] {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let raw = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(raw) => raw,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    log::warn!("admin accept failed: {e}");
                    return;
                }
            };
            // SAFETY: accept4 returned a new descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let peer = match Peer::of(&fd) {
                Ok(peer) => peer,
                Err(e) => {
                    log::warn!("cannot read the credentials of an admin connection: {e}");
                    continue;
                }
            };
            let mine = self
                .connections
                .iter()
                .filter(|c| c.peer.uid == peer.uid)
                .count();
            let full = if mine >= MAX_ADMIN_CONNECTIONS_PER_UID {
                Some(format!(
                    "uid {} already has {mine} admin connections open (the limit per user)",
                    peer.uid
                ))
            } else if self.connections.len() >= MAX_ADMIN_CONNECTIONS {
                Some(format!(
                    "{} admin connections are open (the limit); try again in a moment",
                    self.connections.len()
                ))
            } else {
                None
            };
            if let Some(why) = full {
                reply(
                    &fd,
                    &AdminReply::Error {
                        message: why.clone(),
                    },
                );
                self.limiter.warn(
                    peer.uid,
                    "admin connections refused",
                    Instant::now(),
                    || {
                        format!(
                            "refused an admin connection of pid {} (uid {}): {why}",
                            peer.pid, peer.uid
                        )
                    },
                );
                continue;
            }
            self.connections.push(Connection {
                fd,
                peer,
                deadline: Instant::now() + ADMIN_REQUEST_TIMEOUT,
            });
        }
    }

    /// Reads the request waiting on `connection`, answers it, and closes the connection.
    fn answer(&mut self, connection: Connection) {
        let peer = connection.peer;
        let refused = |message: String| AdminReply::Error { message };
        let answer = match recv(
            connection.fd.as_raw_fd(),
            &mut self.buffer,
            MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) if hung_up(&connection.fd) => return,
            Ok(0) => refused(
                "an empty request: send one JSON object, such as {\"command\": \"status\"}".into(),
            ),
            Ok(len) if len > MAX_ADMIN_PACKET => refused(format!(
                "request of {len} bytes is larger than {MAX_ADMIN_PACKET}"
            )),
            Ok(len) => match serde_json::from_slice::<AdminRequest>(&self.buffer[..len]) {
                Ok(request) => match self.denial(&request, &peer) {
                    Some(message) => refused(message),
                    None => {
                        let admin = self.access.is_admin(&peer);
                        let answer = (self.handler)(request, &Caller { peer, admin });
                        reply(&connection.fd, &answer);
                        return;
                    }
                },
                Err(e) => refused(format!("invalid admin request: {e}")),
            },
            Err(Errno::EAGAIN | Errno::EINTR) => {
                // Readable but nothing to read after all: wait for it again.
                self.connections.push(Connection { peer, ..connection });
                return;
            }
            Err(_) => return,
        };
        // Only what is not a request at all, or not allowed, is logged: an operator's
        // request refused for its values is answered, and that is enough.
        if let AdminReply::Error { message } = &answer {
            self.limiter
                .warn(peer.uid, "admin requests refused", Instant::now(), || {
                    format!(
                        "refused an admin request of pid {} (uid {}): {message}",
                        peer.pid, peer.uid
                    )
                });
        }
        reply(&connection.fd, &answer);
    }

    /// Why `peer` may not make `request`, if it may not. A target change goes on to the
    /// handler, which knows whose app it is.
    fn denial(&self, request: &AdminRequest, peer: &Peer) -> Option<String> {
        let what = match request {
            AdminRequest::Hold { .. } => "hold",
            AdminRequest::Release => "release",
            _ => return None,
        };
        (!self.access.is_admin(peer)).then(|| self.access.denied(peer, what))
    }
}

/// Sends `answer` on `socket`, once: the connection is new and its peer waits for it,
/// so the kernel takes it at once or never.
fn reply(socket: &OwnedFd, answer: &AdminReply) {
    let bytes = serde_json::to_vec(answer).expect("admin replies always serialise");
    if let Err(e) = send(
        socket.as_raw_fd(),
        &bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    ) {
        log::debug!("cannot answer an admin request: {e}");
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
    fn admins_are_root_the_agents_user_and_the_admin_group() {
        let peer = |uid, gid, groups: &[u32]| Peer {
            pid: 1,
            uid,
            gid,
            groups: Some(groups.to_vec()),
        };
        let access = Access {
            own_uid: 4000,
            admin_gid: Some(50),
            admin_group: "ops".into(),
        };
        assert!(access.is_admin(&peer(0, 0, &[])));
        assert!(access.is_admin(&peer(4000, 4000, &[])));
        assert!(access.is_admin(&peer(4001, 50, &[])), "primary group");
        assert!(
            access.is_admin(&peer(4001, 100, &[100, 50])),
            "supplementary group"
        );
        assert!(!access.is_admin(&peer(4001, 100, &[100, 51])));
        let text = access.denied(&peer(4_000_000, 100, &[]), "hold");
        assert!(
            text.starts_with("permission denied: hold is for root, user ")
                && text.contains("or a member of group ops, and uid 4000000 is not"),
            "{text}"
        );
        let missing = Access {
            admin_gid: None,
            ..access
        };
        assert!(!missing.is_admin(&peer(4001, 50, &[50])));
        assert!(missing
            .denied(&peer(4001, 50, &[]), "release")
            .contains("the admin group ops does not exist"));
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
