//! The app registry: the socket apps register on, one shared page per app, and the
//! bookkeeping of who is registered.
//!
//! One thread owns the listening socket and every connection and polls them together
//! with one pidfd per registered process. Everything an app sends is untrusted: each
//! packet is bounded, decoded and validated by `governor-proto`, and answered with a
//! clear error that changes nothing; a connection that misbehaves at the socket level
//! (never reads its replies) is closed. No app can stop the registry or another app.
//!
//! Connections that have not registered yet are the cheap way to jam a registry, so they
//! get a pool of their own, apart from the registered apps' slots, bounded in all and per
//! user, and a deadline to register. The warnings a peer can cause are rate-limited.
//!
//! Nor is anything an app writes in its page trusted: [`AppHandle::report`] clamps what
//! cannot be and says what was wrong ([`PageProblems`]).
//!
//! Other threads learn about apps from [`RegistryEvent`]s and write commands straight
//! into an app's shared page through its [`AppHandle`] (atomics, no thread hop).

use crate::log_limit::LogLimiter;
use crate::peer::Peer;
use crate::socket::{bind_seqpacket, hung_up, timeout_until};
use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use governor_proto::shm::{Reason, ShmPage, NO_SUBNET, SHM_SIZE};
use governor_proto::validate::ProtoError;
use governor_proto::{
    decode_request, encode, Device, ErrorCode, RegisterRequest, Reply, Request, Subnet, Target,
    DEFAULT_SOCKET_PATH, MAX_APPS, MAX_PACKET_BYTES, MAX_PENDING_CONNECTIONS, MAX_PENDING_PER_UID,
    PROTOCOL_VERSION, REGISTRATION_TIMEOUT_MS,
};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{accept4, recv, sendmsg, ControlMessage, MsgFlags, SockFlag};
use nix::unistd::ftruncate;
use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest latency an app may report for one inference: an hour, sixty times the
/// longest deadline. Anything longer is a page written wrong, not a slow inference.
pub const MAX_REPORTED_LATENCY_NS: u64 = 3_600_000_000_000;

/// Where and how the registry listens.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub socket_path: PathBuf,
    /// Group given the socket (mode 0660) when it exists on this machine.
    pub group: Option<String>,
    pub max_apps: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            group: Some("dnngov".into()),
            max_apps: MAX_APPS,
        }
    }
}

/// What the registry tells the rest of the agent.
#[derive(Debug, Clone)]
pub enum RegistryEvent {
    Joined(Arc<AppHandle>),
    TargetChanged {
        app_id: u32,
        target: Target,
    },
    Left {
        app_id: u32,
        name: String,
        why: LeaveReason,
    },
}

/// How the registry noticed an app was gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The app closed its connection.
    HungUp,
    /// Its process exited (seen on its pidfd).
    Exited,
    /// The registry closed the connection (the app did not read its replies).
    Dropped,
}

/// A registered app, shared with the threads that govern it.
#[derive(Debug)]
pub struct AppHandle {
    pub app_id: u32,
    pub pid: i32,
    pub uid: u32,
    pub name: String,
    pub devices: Vec<Device>,
    /// Ordered from least to most accurate, as the app declared it.
    pub subnets: Vec<Subnet>,
    pub default_subnet: u32,
    pub joined: Instant,
    target: Mutex<Target>,
    /// Set by an operator (`dnngovctl set-target`); wins over the app's own target
    /// until cleared.
    operator_target: Mutex<Option<Target>>,
    page: SharedPage,
    /// Whether the log already said that this app's page holds figures that cannot be.
    page_flagged: AtomicBool,
}

/// What an app reported through its page, read at one moment, with what cannot be
/// clamped: the fields below are what the agent acts on and shows, `problems` what the
/// page held instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppReport {
    /// `None` until the app acknowledges a sub-network.
    pub active_subnet: Option<u32>,
    pub requested_subnet: u32,
    pub heartbeat_ns: u64,
    pub inferences_completed: u64,
    pub deadline_misses: u64,
    pub last_latency_ns: u64,
    /// Sum of all completed inferences' latencies.
    pub latency_sum_ns: u64,
    /// Start of the inference in flight, if one is.
    pub inference_begin_ns: Option<u64>,
    pub problems: PageProblems,
}

/// Figures an app wrote in its page that cannot be right, as it wrote them. The app
/// block is written by the app alone, so any value may be there: a client with a bug, or
/// one that writes garbage on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageProblems {
    /// `active_subnet`, when it is not an id of the app's library.
    pub unknown_subnet: Option<u32>,
    /// `deadline_misses`, when above `inferences_completed`.
    pub misses: Option<u64>,
    /// `last_latency_ns`, when above [`MAX_REPORTED_LATENCY_NS`] or longer than the clock
    /// has run.
    pub latency_ns: Option<u64>,
    /// `heartbeat_ns`, when ahead of `CLOCK_MONOTONIC`.
    pub heartbeat_ns: Option<u64>,
    /// `inference_begin_ns`, when ahead of `CLOCK_MONOTONIC`.
    pub inference_begin_ns: Option<u64>,
}

impl PageProblems {
    pub fn is_empty(&self) -> bool {
        *self == PageProblems::default()
    }

    /// One sentence for people, `None` when the page is consistent.
    pub fn describe(&self, report: &AppReport) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(subnet) = self.unknown_subnet {
            parts.push(format!(
                "active_subnet {subnet} is not in its library (shown as none)"
            ));
        }
        if let Some(misses) = self.misses {
            parts.push(format!(
                "deadline_misses {misses} is above inferences_completed {} (shown as {})",
                report.inferences_completed, report.deadline_misses
            ));
        }
        if let Some(latency) = self.latency_ns {
            parts.push(format!(
                "last_latency_ns {latency} is longer than an inference can take (shown as 0)"
            ));
        }
        if let Some(heartbeat) = self.heartbeat_ns {
            parts.push(format!("heartbeat_ns {heartbeat} is ahead of the clock"));
        }
        if let Some(begin) = self.inference_begin_ns {
            parts.push(format!(
                "inference_begin_ns {begin} is ahead of the clock (ignored)"
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl AppHandle {
    /// The app's shared page (the agent writes only its `agent` block).
    pub fn page(&self) -> &ShmPage {
        self.page.get()
    }

    /// Asks the app to run `subnet`, which must be in its library.
    pub fn request_subnet(&self, subnet: u32, reason: Reason) -> Result<()> {
        if !self.subnets.iter().any(|s| s.id == subnet) {
            bail!(
                "app {} ({}) has no sub-network {subnet}; its library has {:?}",
                self.app_id,
                self.name,
                self.subnets.iter().map(|s| s.id).collect::<Vec<_>>()
            );
        }
        self.page().agent.write_command(subnet, reason);
        Ok(())
    }

    /// The target the agent governs by: the operator's override, else the app's own.
    pub fn target(&self) -> Target {
        lock(&self.operator_target)
            .clone()
            .unwrap_or_else(|| self.app_target())
    }

    /// The target the app asked for, whatever an operator says.
    pub fn app_target(&self) -> Target {
        lock(&self.target).clone()
    }

    /// Overrides the app's target (`None` clears the override).
    pub fn set_operator_target(&self, target: Option<Target>) {
        *lock(&self.operator_target) = target;
    }

    pub fn has_operator_target(&self) -> bool {
        lock(&self.operator_target).is_some()
    }

    /// What the app reports now, every figure within what can be (see [`AppReport`]).
    /// The first time the page holds something that cannot be, the log says what.
    pub fn report(&self) -> AppReport {
        let page = self.page();
        let now = || dnngov_bpf::Nanos::monotonic_now().0;
        let report = read_report(page, &self.subnets, now);
        if !report.problems.is_empty() && !self.page_flagged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "app {} \"{}\" (pid {}) wrote figures in its shared page that cannot be: {}",
                self.app_id,
                self.name,
                self.pid,
                report.problems.describe(&report).unwrap_or_default()
            );
        }
        report
    }
}

/// What an app's page says, every figure within what can be: the one reading of the app
/// block the agent acts on (see [`AppReport`] for the clamps). `now` gives
/// `CLOCK_MONOTONIC` in ns and is called after the page is read. The app may have written
/// anything into its block, so this is public for the fuzz target that checks the clamps.
pub fn read_report(page: &ShmPage, subnets: &[Subnet], now: impl FnOnce() -> u64) -> AppReport {
    let app = &page.app;
    // Acquire pairs with the client's Release increment: the fields it wrote before
    // counting the inference are visible.
    let inferences_completed = app.inferences_completed.load(Ordering::Acquire);
    let active = app.active_subnet.load(Ordering::Acquire);
    let raw = AppReport {
        active_subnet: (active != NO_SUBNET).then_some(active),
        requested_subnet: page.agent.requested_subnet(),
        heartbeat_ns: app.heartbeat_ns.load(Ordering::Relaxed),
        inferences_completed,
        deadline_misses: app.deadline_misses.load(Ordering::Relaxed),
        last_latency_ns: app.last_latency_ns.load(Ordering::Relaxed),
        latency_sum_ns: app.latency_sum_ns.load(Ordering::Relaxed),
        inference_begin_ns: Some(app.inference_begin_ns.load(Ordering::Relaxed))
            .filter(|b| *b != 0),
        problems: PageProblems::default(),
    };
    sanitise(raw, subnets, now())
}

/// `raw` with every figure that cannot be replaced by what can, and noted in `problems`.
/// `now`: `CLOCK_MONOTONIC`, in ns, read after the page.
fn sanitise(raw: AppReport, subnets: &[Subnet], now: u64) -> AppReport {
    let mut report = raw;
    let problems = &mut report.problems;
    if let Some(active) = raw.active_subnet {
        if !subnets.iter().any(|s| s.id == active) {
            problems.unknown_subnet = Some(active);
            report.active_subnet = None;
        }
    }
    if raw.deadline_misses > raw.inferences_completed {
        problems.misses = Some(raw.deadline_misses);
        report.deadline_misses = raw.inferences_completed;
    }
    if raw.last_latency_ns > MAX_REPORTED_LATENCY_NS.min(now) {
        problems.latency_ns = Some(raw.last_latency_ns);
        report.last_latency_ns = 0;
    }
    if raw.heartbeat_ns > now {
        problems.heartbeat_ns = Some(raw.heartbeat_ns);
        report.heartbeat_ns = 0;
    }
    if let Some(begin) = raw.inference_begin_ns.filter(|b| *b > now) {
        problems.inference_begin_ns = Some(begin);
        report.inference_begin_ns = None;
    }
    report
}

/// The agent's mapping of one app's memfd.
#[derive(Debug)]
struct SharedPage {
    addr: NonNull<u8>,
}

// SAFETY: the page holds only atomics; the mapping lives as long as this value.
unsafe impl Send for SharedPage {}
unsafe impl Sync for SharedPage {}

impl SharedPage {
    fn get(&self) -> &ShmPage {
        // SAFETY: a live shared mapping of SHM_SIZE bytes, page aligned.
        unsafe { ShmPage::from_ptr(self.addr.as_ptr()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing can borrow it after the handle is gone.
        let _ = unsafe { munmap(self.addr.cast(), SHM_SIZE) };
    }
}

/// Creates an app's page: a memfd sized to one page and sealed so neither side can
/// grow or shrink it (a shrink would make the other side fault), initialised, mapped.
fn create_page(app_id: u32, initial_subnet: u32) -> Result<(OwnedFd, SharedPage)> {
    let name = c"dnngov-app";
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .context("memfd_create")?;
    ftruncate(&fd, SHM_SIZE as i64).context("sizing the memfd")?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("sealing the memfd")?;
    let size = NonZeroUsize::new(SHM_SIZE).expect("page size is not zero");
    // SAFETY: a new shared mapping of a memfd we just made.
    let addr = unsafe {
        mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
    }
    .context("mapping the memfd")?;
    let page = SharedPage { addr: addr.cast() };
    page.get().initialise(app_id, initial_subnet);
    Ok((fd, page))
}

/// A running registry. Dropping it stops the thread, closes every connection and
/// removes the socket file.
pub struct Registry {
    events: Receiver<RegistryEvent>,
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
    waker: UnixStream,
    thread: Option<JoinHandle<()>>,
    socket_path: PathBuf,
}

impl Registry {
    /// Binds the socket and starts the registry thread.
    pub fn start(config: RegistryConfig) -> Result<Self> {
        let listener = bind_seqpacket(&config.socket_path, config.group.as_deref())?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let apps = Arc::new(Mutex::new(BTreeMap::new()));
        let (waker, wakee) = UnixStream::pair().context("creating the registry's waker")?;
        let mut state = State {
            listener,
            wakee,
            connections: Vec::new(),
            apps: apps.clone(),
            events: events_tx,
            max_apps: config.max_apps,
            next_app_id: 1,
            buffer: vec![0u8; MAX_PACKET_BYTES + 1],
            limiter: LogLimiter::for_target(module_path!()),
        };
        let thread = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || state.run())
            .context("starting the registry thread")?;
        log::info!("listening for apps on {}", config.socket_path.display());
        Ok(Self {
            events,
            apps,
            waker,
            thread: Some(thread),
            socket_path: config.socket_path,
        })
    }

    /// Joins, target changes and departures, in the order they happened.
    pub fn events(&self) -> &Receiver<RegistryEvent> {
        &self.events
    }

    /// The apps registered now, by id.
    pub fn apps(&self) -> Vec<Arc<AppHandle>> {
        self.table().apps()
    }

    pub fn app(&self, app_id: u32) -> Option<Arc<AppHandle>> {
        self.table().app(app_id)
    }

    /// A view of the registered apps that other threads can keep.
    pub fn table(&self) -> AppTable {
        AppTable {
            apps: self.apps.clone(),
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.waker.write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// The registered apps, readable from any thread.
#[derive(Clone)]
pub struct AppTable {
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
}

impl AppTable {
    pub fn apps(&self) -> Vec<Arc<AppHandle>> {
        lock(&self.apps).values().cloned().collect()
    }

    pub fn app(&self, app_id: u32) -> Option<Arc<AppHandle>> {
        lock(&self.apps).get(&app_id).cloned()
    }

    /// An app by id, or by name when exactly one app has that name.
    pub fn find(&self, id_or_name: &str) -> Result<Arc<AppHandle>> {
        if let Ok(id) = id_or_name.parse::<u32>() {
            if let Some(app) = self.app(id) {
                return Ok(app);
            }
        }
        let matches: Vec<_> = self
            .apps()
            .into_iter()
            .filter(|a| a.name == id_or_name)
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => bail!("no registered app has the id or name {id_or_name:?}"),
            n => bail!(
                "{n} apps are named {id_or_name:?} (ids {:?}): give the id",
                matches.iter().map(|a| a.app_id).collect::<Vec<_>>()
            ),
        }
    }
}

struct Connection {
    fd: OwnedFd,
    peer: Peer,
    app_id: Option<u32>,
    pidfd: Option<OwnedFd>,
    /// Until it registers: when the registry gives up on it.
    deadline: Option<Instant>,
}

struct State {
    listener: OwnedFd,
    wakee: UnixStream,
    connections: Vec<Connection>,
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
    events: Sender<RegistryEvent>,
    max_apps: usize,
    next_app_id: u32,
    buffer: Vec<u8>,
    limiter: LogLimiter,
}

/// How long a connection may stay unregistered.
const REGISTRATION_TIMEOUT: Duration = Duration::from_millis(REGISTRATION_TIMEOUT_MS);

/// What to do with a connection after handling its events.
enum Outcome {
    Keep,
    Close(LeaveReason),
}

impl State {
    fn run(&mut self) {
        loop {
            // Poll set: [waker, listener, then per connection its socket and its pidfd].
            let mut fds = Vec::with_capacity(2 + 2 * self.connections.len());
            fds.push(PollFd::new(self.wakee.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for connection in &self.connections {
                fds.push(PollFd::new(connection.fd.as_fd(), PollFlags::POLLIN));
                if let Some(pidfd) = &connection.pidfd {
                    fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
                }
            }
            // Woken for the next registration deadline, or to log the counts of
            // warnings held back, whichever comes first.
            let wake_at = self
                .connections
                .iter()
                .filter_map(|c| c.deadline)
                .chain(self.limiter.next_flush())
                .min();
            match poll(&mut fds, timeout_until(wake_at)) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("registry poll failed: {e}; the registry stops");
                    return;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let stop = ready(&fds[0]);
            let accept = ready(&fds[1]);
            drop(fds);
            if stop {
                let mut byte = [0u8; 1];
                let _ = self.wakee.read(&mut byte);
                self.close_all();
                return;
            }
            // Walk connections against their poll slots, collecting the ones to close.
            let mut slot = 2;
            let mut closing = Vec::new();
            for index in 0..self.connections.len() {
                let socket_events = revents[slot];
                slot += 1;
                let exited = if self.connections[index].pidfd.is_some() {
                    slot += 1;
                    !revents[slot - 1].is_empty()
                } else {
                    false
                };
                let outcome = if exited {
                    Outcome::Close(LeaveReason::Exited)
                } else if !socket_events.is_empty() {
                    self.service(index, socket_events)
                } else {
                    Outcome::Keep
                };
                if let Outcome::Close(why) = outcome {
                    closing.push((index, why));
                }
            }
            for (index, why) in closing.into_iter().rev() {
                let connection = self.connections.swap_remove(index);
                self.unregister(connection, why);
            }
            self.close_overdue(Instant::now());
            self.limiter.flush(Instant::now());
            if accept {
                self.accept_all();
            }
        }
    }

    /// Closes the connections that did not register in time, telling each why.
    fn close_overdue(&mut self, now: Instant) {
        let mut index = 0;
        while index < self.connections.len() {
            if self.connections[index].deadline.is_none_or(|d| now < d) {
                index += 1;
                continue;
            }
            let connection = self.connections.swap_remove(index);
            let error = ProtoError::new(
                ErrorCode::RegistrationTimeout,
                format!(
                    "no register message within {} s of connecting; connect again and \
                     register at once",
                    REGISTRATION_TIMEOUT.as_secs_f64()
                ),
            );
            let _ = send_reply(&connection.fd, &error.to_reply(), None);
            let peer = &connection.peer;
            self.limiter
                .warn(peer.uid, "unregistered connections closed", now, || {
                    format!(
                        "closed a connection of pid {} (uid {}) that did not register within {} s",
                        peer.pid,
                        peer.uid,
                        REGISTRATION_TIMEOUT.as_secs_f64()
                    )
                });
        }
    }

    /// Why a new connection from `peer` cannot be held, if it cannot: the pool of
    /// unregistered connections is full, in all or for its user.
    fn pool_full(&self, peer: &Peer) -> Option<String> {
        let pending = self.connections.iter().filter(|c| c.app_id.is_none());
        let (all, mine) = pending.fold((0, 0), |(all, mine), c| {
            (all + 1, mine + usize::from(c.peer.uid == peer.uid))
        });
        if mine >= MAX_PENDING_PER_UID {
            Some(format!(
                "uid {} already holds {mine} connections that have not registered (the limit \
                 per user); register on one of them or close some",
                peer.uid
            ))
        } else if all >= MAX_PENDING_CONNECTIONS {
            Some(format!(
                "the agent already holds {all} connections that have not registered (the \
                 limit); try again in a few seconds"
            ))
        } else {
            None
        }
    }

    fn accept_all(&mut self) {
        loop {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(raw) => unsafe { OwnedFd::from_raw_fd(raw) },
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => {
                    log::warn!("accepting an app connection failed: {e}");
                    return;
                }
            };
            let peer = match Peer::of(&fd) {
                Ok(peer) => peer,
                Err(e) => {
                    log::warn!("cannot read the peer credentials of a connection: {e}");
                    continue;
                }
            };
            let now = Instant::now();
            if let Some(why) = self.pool_full(&peer) {
                let error = ProtoError::new(ErrorCode::TooManyConnections, &why);
                let _ = send_reply(&fd, &error.to_reply(), None);
                self.limiter.warn(peer.uid, "connections refused", now, || {
                    format!(
                        "refused a connection of pid {} (uid {}): {why}",
                        peer.pid, peer.uid
                    )
                });
                continue;
            }
            self.connections.push(Connection {
                fd,
                peer,
                app_id: None,
                pidfd: None,
                deadline: Some(now + REGISTRATION_TIMEOUT),
            });
        }
    }

    /// Handles readiness of connection `index`'s socket.
    fn service(&mut self, index: usize, events: PollFlags) -> Outcome {
        if events.contains(PollFlags::POLLIN) {
            // Drain every packet that is waiting: one poll round may bring several.
            loop {
                let fd = self.connections[index].fd.as_raw_fd();
                // MSG_TRUNC makes recv return the packet's real length, so an oversized
                // packet is recognised as such rather than read as a truncated one.
                match recv(fd, &mut self.buffer, MsgFlags::MSG_TRUNC) {
                    // An empty packet reads as 0 bytes, as the end of the connection does.
                    Ok(0) if hung_up(&self.connections[index].fd) => {
                        return Outcome::Close(LeaveReason::HungUp)
                    }
                    Ok(len) => {
                        let reply = if len > MAX_PACKET_BYTES {
                            ProtoError::new(
                                ErrorCode::PacketTooLarge,
                                format!(
                                    "packet of {len} bytes is larger than the limit of \
                                     {MAX_PACKET_BYTES} bytes"
                                ),
                            )
                            .to_reply()
                        } else if len == 0 {
                            self.refused(index, "an empty packet: send one JSON object per packet")
                        } else {
                            let packet = self.buffer[..len].to_vec();
                            match self.handle_packet(index, &packet) {
                                Handled::Reply(reply) => reply,
                                Handled::Sent => continue,
                                Handled::Close(why) => return Outcome::Close(why),
                            }
                        };
                        if send_reply(&self.connections[index].fd, &reply, None).is_err() {
                            return Outcome::Close(LeaveReason::Dropped);
                        }
                    }
                    Err(Errno::EAGAIN) => return Outcome::Keep,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return Outcome::Close(LeaveReason::HungUp),
                }
            }
        }
        if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Outcome::Close(LeaveReason::HungUp);
        }
        Outcome::Keep
    }

    fn handle_packet(&mut self, index: usize, packet: &[u8]) -> Handled {
        let request = match decode_request(packet) {
            Ok(request) => request,
            Err(e) => {
                let peer = &self.connections[index].peer;
                self.limiter
                    .warn(peer.uid, "refused messages", Instant::now(), || {
                        format!(
                            "refused a message from pid {} (uid {}): {}",
                            peer.pid, peer.uid, e.message
                        )
                    });
                return Handled::Reply(e.to_reply());
            }
        };
        match request {
            Request::Register(register) => self.register(index, register),
            Request::SetTarget { target } => {
                let Some(app_id) = self.connections[index].app_id else {
                    return Handled::Reply(
                        ProtoError::new(
                            ErrorCode::NotRegistered,
                            "set_target before register: register the app first",
                        )
                        .to_reply(),
                    );
                };
                if let Some(handle) = lock(&self.apps).get(&app_id) {
                    *lock(&handle.target) = target.clone();
                }
                log::info!(
                    "app {app_id}: new target, deadline {} ms",
                    target.deadline_ms
                );
                let _ = self
                    .events
                    .send(RegistryEvent::TargetChanged { app_id, target });
                Handled::Reply(Reply::TargetUpdated { app_id })
            }
        }
    }

    fn register(&mut self, index: usize, register: RegisterRequest) -> Handled {
        let (existing, peer_pid, peer_uid) = {
            let connection = &self.connections[index];
            (connection.app_id, connection.peer.pid, connection.peer.uid)
        };
        let refuse =
            |code, message: String| Handled::Reply(ProtoError::new(code, message).to_reply());
        if let Some(app_id) = existing {
            return refuse(
                ErrorCode::AlreadyRegistered,
                format!("this connection already registered app {app_id}; open another connection to register another app"),
            );
        }
        if register.pid != peer_pid {
            return refuse(
                ErrorCode::PidMismatch,
                format!(
                    "the message says pid {} but the connection belongs to pid {peer_pid}",
                    register.pid
                ),
            );
        }
        let registered = lock(&self.apps).len();
        if registered >= self.max_apps {
            return refuse(
                ErrorCode::TooManyApps,
                format!(
                    "{registered} apps are registered already (the limit is {}); try again when one exits",
                    self.max_apps
                ),
            );
        }
        let app_id = self.allocate_app_id();
        let initial_subnet = register.default_subnet_id();
        let (memfd, page) = match create_page(app_id, initial_subnet) {
            Ok(created) => created,
            Err(e) => {
                log::error!("cannot create shared memory for {}: {e:#}", register.app);
                return refuse(
                    ErrorCode::Internal,
                    format!("the agent could not create shared memory: {e:#}"),
                );
            }
        };
        let pidfd = pidfd_open(peer_pid);
        if pidfd.is_none() {
            log::debug!("no pidfd for pid {peer_pid}; relying on the connection closing");
        }
        let reply = Reply::Accepted {
            protocol_version: PROTOCOL_VERSION,
            app_id,
            shm_size: SHM_SIZE as u32,
            initial_subnet,
        };
        let handle = Arc::new(AppHandle {
            app_id,
            pid: peer_pid,
            uid: peer_uid,
            name: register.app.clone(),
            devices: register.devices.clone(),
            subnets: register.subnets.clone(),
            default_subnet: initial_subnet,
            joined: Instant::now(),
            target: Mutex::new(register.target.clone()),
            operator_target: Mutex::new(None),
            page,
            page_flagged: AtomicBool::new(false),
        });
        log::info!(
            "app {app_id} \"{}\" (pid {peer_pid}) registered: {} sub-networks, deadline {} ms",
            handle.name,
            handle.subnets.len(),
            register.target.deadline_ms
        );
        // Registered before the reply goes out: an app that hears "accepted" is in the
        // registry already. Closing the connection on a failed send unregisters it.
        lock(&self.apps).insert(app_id, handle.clone());
        let connection = &mut self.connections[index];
        connection.app_id = Some(app_id);
        connection.pidfd = pidfd;
        connection.deadline = None;
        let _ = self.events.send(RegistryEvent::Joined(handle));
        if send_reply(&connection.fd, &reply, Some(&memfd)).is_err() {
            return Handled::Close(LeaveReason::Dropped);
        }
        Handled::Sent
    }

    fn allocate_app_id(&mut self) -> u32 {
        let apps = lock(&self.apps);
        loop {
            let id = self.next_app_id;
            // 0 means "not registered" to clients: skip it when the counter wraps.
            self.next_app_id = self.next_app_id.checked_add(1).unwrap_or(1);
            if !apps.contains_key(&id) {
                return id;
            }
        }
    }

    fn unregister(&mut self, connection: Connection, why: LeaveReason) {
        let Some(app_id) = connection.app_id else {
            return;
        };
        if let Some(handle) = lock(&self.apps).remove(&app_id) {
            log::info!(
                "app {app_id} \"{}\" (pid {}) left: {why:?}",
                handle.name,
                handle.pid
            );
            let _ = self.events.send(RegistryEvent::Left {
                app_id,
                name: handle.name.clone(),
                why,
            });
        }
    }

    fn close_all(&mut self) {
        for connection in std::mem::take(&mut self.connections) {
            self.unregister(connection, LeaveReason::Dropped);
        }
    }
}

impl State {
    /// The error reply to a packet that is not a request at all, logged within limits.
    fn refused(&mut self, index: usize, why: &str) -> Reply {
        let peer = &self.connections[index].peer;
        self.limiter
            .warn(peer.uid, "refused messages", Instant::now(), || {
                format!(
                    "refused a message from pid {} (uid {}): {why}",
                    peer.pid, peer.uid
                )
            });
        ProtoError::new(ErrorCode::Malformed, why).to_reply()
    }
}

enum Handled {
    Reply(Reply),
    /// The reply (with its fd) went out already.
    Sent,
    Close(LeaveReason),
}

/// Sends one reply, with `fd` as SCM_RIGHTS when given. The socket is non-blocking: an
/// app that does not read its replies gets EAGAIN here and is disconnected.
fn send_reply(socket: &OwnedFd, reply: &Reply, fd: Option<&OwnedFd>) -> nix::Result<()> {
    let bytes = encode(reply);
    let iov = [IoSlice::new(&bytes)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a new descriptor that we alone own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays valid if a holder panicked.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn library() -> Vec<Subnet> {
        [(0, 70.0), (1, 75.0)]
            .map(|(id, accuracy_pct)| Subnet {
                id,
                name: format!("s{id}"),
                accuracy_pct,
                latency_ms: None,
                relative_cost: None,
            })
            .to_vec()
    }

    fn honest() -> AppReport {
        AppReport {
            active_subnet: Some(1),
            requested_subnet: 1,
            heartbeat_ns: 9_000_000_000,
            inferences_completed: 100,
            deadline_misses: 3,
            last_latency_ns: 40_000_000,
            latency_sum_ns: 4_000_000_000,
            inference_begin_ns: Some(9_500_000_000),
            problems: PageProblems::default(),
        }
    }

    #[test]
    fn an_honest_page_is_read_as_written() {
        let report = sanitise(honest(), &library(), 10_000_000_000);
        assert_eq!(report, honest());
        assert_eq!(report.problems.describe(&report), None);
    }

    #[test]
    fn figures_that_cannot_be_are_clamped_and_named() {
        let now = 10_000_000_000;
        let garbage = AppReport {
            active_subnet: Some(1_000_000_000),
            deadline_misses: 180,
            last_latency_ns: 18_000_000_000_000_000,
            heartbeat_ns: now + 1,
            inference_begin_ns: Some(u64::MAX),
            ..honest()
        };
        let report = sanitise(garbage, &library(), now);
        assert_eq!(report.active_subnet, None);
        assert_eq!(report.deadline_misses, 100);
        assert_eq!(report.last_latency_ns, 0);
        assert_eq!(report.heartbeat_ns, 0);
        assert_eq!(report.inference_begin_ns, None);
        assert_eq!(
            report.inferences_completed, 100,
            "a counter may be any size"
        );
        let text = report.problems.describe(&report).unwrap();
        for part in [
            "active_subnet 1000000000 is not in its library",
            "deadline_misses 180 is above inferences_completed 100",
            "last_latency_ns 18000000000000000",
            "heartbeat_ns 10000000001 is ahead of the clock",
            "inference_begin_ns 18446744073709551615 is ahead of the clock",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }

    #[test]
    fn read_report_reads_the_app_block_and_clamps_it() {
        let page = ShmPage::zeroed();
        page.initialise(3, 1);
        let app = &page.app;
        app.active_subnet.store(1, Ordering::Relaxed);
        app.heartbeat_ns.store(9_000_000_000, Ordering::Relaxed);
        app.inferences_completed.store(100, Ordering::Relaxed);
        app.deadline_misses.store(3, Ordering::Relaxed);
        app.last_latency_ns.store(40_000_000, Ordering::Relaxed);
        app.latency_sum_ns.store(4_000_000_000, Ordering::Relaxed);
        app.inference_begin_ns
            .store(9_500_000_000, Ordering::Relaxed);
        assert_eq!(read_report(&page, &library(), || 10_000_000_000), honest());
        app.deadline_misses.store(u64::MAX, Ordering::Relaxed);
        app.active_subnet.store(NO_SUBNET, Ordering::Relaxed);
        app.inference_begin_ns.store(0, Ordering::Relaxed);
        let report = read_report(&page, &library(), || 10_000_000_000);
        assert_eq!(report.deadline_misses, 100);
        assert_eq!(report.problems.misses, Some(u64::MAX));
        assert_eq!(report.active_subnet, None, "no sub-network yet");
        assert_eq!(report.problems.unknown_subnet, None);
        assert_eq!(report.inference_begin_ns, None, "no inference in flight");
    }

    #[test]
    fn a_latency_longer_than_the_clock_has_run_cannot_be() {
        let young = AppReport {
            last_latency_ns: 2_000_000_000,
            heartbeat_ns: 0,
            inference_begin_ns: None,
            ..honest()
        };
        let report = sanitise(young, &library(), 1_000_000_000);
        assert_eq!(report.problems.latency_ns, Some(2_000_000_000));
    }
}
