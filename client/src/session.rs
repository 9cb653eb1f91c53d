//! A registered app: the connection to the agent, kept alive in the background, and the
//! calls an inference loop makes.
//!
//! The inference path (`current_subnet`, `begin`, `end`, `ack_subnet`) touches only
//! atomics in the shared page and this struct: no syscall (the clock is read through the
//! vDSO), no lock. Everything that can block (connecting, waiting for replies, noticing
//! that the agent died, reconnecting with backoff) happens on one background thread.

use crate::markers::{dnngov_marker_begin, dnngov_marker_end};
use crate::page::Page;
use crate::trace::{Trace, TRACE_DIR_ENV};
use governor_proto::shm::{Command, ShmPage, NO_SUBNET};
use governor_proto::validate::{validate_register, validate_target};
use governor_proto::{
    encode, Device, ErrorCode, ProtoError, RegisterRequest, Reply, Request, Subnet, Target,
    DEFAULT_SOCKET_PATH, MAX_PACKET_BYTES, PROTOCOL_VERSION, SOCKET_ENV,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    connect, recvmsg, send, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use nix::time::{clock_gettime, ClockId};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What an app declares about itself; the client adds the protocol version and pid.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSpec {
    pub name: String,
    pub devices: Vec<Device>,
    /// Ordered from the cheapest (least accurate) to the most accurate.
    pub subnets: Vec<Subnet>,
    pub target: Target,
    /// What to run without an agent; `None`: the most accurate sub-network.
    pub default_subnet: Option<u32>,
}

/// Where and how to reach the agent.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket_path: PathBuf,
    /// How long to wait for the agent's answer to a registration.
    pub reply_timeout: Duration,
    /// First wait before reconnecting; it doubles on each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Where to append one line per finished inference (`<dir>/<app>-<pid>.csv`, see
    /// docs/app-integration.md); `None`: no trace. A folder that cannot be written is
    /// reported once and the app runs without a trace.
    pub trace_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        let socket_path = std::env::var_os(SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH));
        let trace_dir = std::env::var_os(TRACE_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);
        Self {
            socket_path,
            reply_timeout: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            trace_dir,
        }
    }
}

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid app spec: {0}")]
    InvalidSpec(ProtoError),
    #[error("the agent refused the registration: {message} ({code:?})")]
    Refused { code: ErrorCode, message: String },
    #[error("cannot set up the shared page: {0}")]
    Page(String),
}

/// A registered app. Dropping it unregisters the app.
///
/// One inference at a time: `begin` and `end` pairs must not overlap on one session
/// (register one session per concurrent inference stream).
pub struct Session {
    shared: Arc<Shared>,
    trace: Option<Trace>,
    waker: UnixStream,
    worker: Option<JoinHandle<()>>,
}

struct Shared {
    page: Page,
    request: Mutex<RegisterRequest>,
    default_subnet: u32,
    options: Options,
    /// 0 while not registered (the agent numbers apps from 1).
    app_id: AtomicU32,
    connection: Mutex<Option<Arc<OwnedFd>>>,
    seq: AtomicU64,
    begin_ns: AtomicU64,
    deadline_ns: AtomicU64,
    /// The sub-network the inference begun last runs, for the trace.
    running_subnet: AtomicU32,
    shutdown: AtomicBool,
    last_error: Mutex<Option<String>>,
}

enum AttemptError {
    /// No agent, or it did not answer: try again later.
    Unavailable(String),
    /// The agent answered no.
    Refused(ProtoError),
}

impl Session {
    /// Registers with the agent. Returns a session even when no agent runs: the app then
    /// runs its default sub-network and the session connects in the background as soon
    /// as an agent appears. Fails only on a spec the agent would refuse in any case.
    pub fn register(spec: AppSpec, options: Options) -> Result<Self, ClientError> {
        let request = RegisterRequest {
            protocol_version: PROTOCOL_VERSION,
            app: spec.name,
            pid: std::process::id() as i32,
            devices: spec.devices,
            subnets: spec.subnets,
            target: spec.target,
            default_subnet: spec.default_subnet,
        };
        validate_register(&request).map_err(ClientError::InvalidSpec)?;
        let default_subnet = request.default_subnet_id();
        let trace = options.trace_dir.as_deref().and_then(|dir| {
            Trace::open(dir, &request.app, &request.subnets)
                .map_err(|why| {
                    crate::trace::warn(&format!(
                        "no inference trace in {}: {why}; running without one",
                        dir.display()
                    ))
                })
                .ok()
        });
        let page =
            Page::standalone(default_subnet).map_err(|e| ClientError::Page(e.to_string()))?;
        let shared = Arc::new(Shared {
            page,
            request: Mutex::new(request),
            default_subnet,
            options,
            app_id: AtomicU32::new(0),
            connection: Mutex::new(None),
            seq: AtomicU64::new(0),
            begin_ns: AtomicU64::new(0),
            deadline_ns: AtomicU64::new(0),
            running_subnet: AtomicU32::new(default_subnet),
            shutdown: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let first = match shared.attempt() {
            Ok(connection) => Some(connection),
            Err(AttemptError::Refused(e)) if !retryable(e.code) => {
                return Err(ClientError::Refused {
                    code: e.code,
                    message: e.message,
                })
            }
            Err(AttemptError::Refused(e)) => {
                log::warn!(
                    "dnngov: agent busy ({}); retrying in the background",
                    e.message
                );
                shared.remember_error(e.message);
                None
            }
            Err(AttemptError::Unavailable(why)) => {
                log::info!("dnngov: no agent ({why}); running the default sub-network");
                shared.remember_error(why);
                None
            }
        };
        let (waker, wakee) = UnixStream::pair().map_err(|e| ClientError::Page(e.to_string()))?;
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("dnngov-client".into())
                .spawn(move || shared.run(first, wakee))
                .map_err(|e| ClientError::Page(format!("cannot start the client thread: {e}")))?
        };
        Ok(Self {
            shared,
            trace,
            waker,
            worker: Some(worker),
        })
    }

    /// The sub-network the agent asks for (or the default without an agent): one atomic
    /// load, cheap enough to call before every inference.
    #[inline]
    pub fn current_subnet(&self) -> u32 {
        self.page().agent.requested_subnet()
    }

    /// The agent's command with its reason and generation, read consistently.
    pub fn command(&self) -> Command {
        self.page().agent.read_command()
    }

    /// Tells the agent that the app now runs `subnet`.
    #[inline]
    pub fn ack_subnet(&self, subnet: u32) {
        self.page()
            .app
            .active_subnet
            .store(subnet, Ordering::Release);
    }

    /// Marks the start of an inference that must finish within `deadline`
    /// (`Duration::ZERO`: no deadline). Returns its sequence number.
    #[inline]
    pub fn begin(&self, deadline: Duration) -> u64 {
        let shared = &*self.shared;
        let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let deadline_ns = u64::try_from(deadline.as_nanos()).unwrap_or(u64::MAX);
        let now = monotonic_ns();
        shared.begin_ns.store(now, Ordering::Relaxed);
        shared.deadline_ns.store(deadline_ns, Ordering::Relaxed);
        let app = &self.page().app;
        app.inference_begin_ns.store(now, Ordering::Relaxed);
        let active = app.active_subnet.load(Ordering::Relaxed);
        let subnet = if active == NO_SUBNET {
            self.current_subnet()
        } else {
            active
        };
        shared.running_subnet.store(subnet, Ordering::Relaxed);
        dnngov_marker_begin(
            shared.app_id.load(Ordering::Relaxed),
            seq,
            subnet,
            deadline_ns,
        );
        seq
    }

    /// Marks the end of the inference begun last; returns its latency.
    #[inline]
    pub fn end(&self) -> Duration {
        let shared = &*self.shared;
        let seq = shared.seq.load(Ordering::Relaxed);
        dnngov_marker_end(shared.app_id.load(Ordering::Relaxed), seq);
        let now = monotonic_ns();
        let latency = now.saturating_sub(shared.begin_ns.load(Ordering::Relaxed));
        let deadline = shared.deadline_ns.load(Ordering::Relaxed);
        let app = &self.page().app;
        app.last_latency_ns.store(latency, Ordering::Relaxed);
        app.latency_sum_ns.fetch_add(latency, Ordering::Relaxed);
        if deadline != 0 && latency > deadline {
            app.deadline_misses.fetch_add(1, Ordering::Relaxed);
        }
        app.inference_begin_ns.store(0, Ordering::Relaxed);
        app.heartbeat_ns.store(now, Ordering::Relaxed);
        // Release: an agent that sees the new count sees the latency and misses too.
        app.inferences_completed.fetch_add(1, Ordering::Release);
        if let Some(trace) = &self.trace {
            let subnet = shared.running_subnet.load(Ordering::Relaxed);
            trace.record(now, latency, deadline, subnet);
        }
        Duration::from_nanos(latency)
    }

    /// Changes the target. Applied by the agent asynchronously; also used on every
    /// reconnection. Fails only on a target that breaks the protocol's limits.
    pub fn set_target(&self, target: Target) -> Result<(), ClientError> {
        validate_target(&target).map_err(ClientError::InvalidSpec)?;
        // Under the request lock, so a registration in progress either sent this target
        // or sees it when it stores its connection (see `attempt`).
        let mut request = lock(&self.shared.request);
        request.target = target.clone();
        if let Some(fd) = lock(&self.shared.connection).as_ref() {
            // A failed send means the agent is going away; the worker will reconnect and
            // register with the new target.
            send_target(fd, target);
        }
        Ok(())
    }

    /// Whether an agent governs this app right now.
    pub fn is_connected(&self) -> bool {
        self.app_id() != 0
    }

    /// The agent's id for this app, 0 while not registered.
    pub fn app_id(&self) -> u32 {
        self.shared.app_id.load(Ordering::Acquire)
    }

    /// Inferences finished and deadlines missed since the session started.
    pub fn counters(&self) -> (u64, u64) {
        let app = &self.page().app;
        (
            app.inferences_completed.load(Ordering::Relaxed),
            app.deadline_misses.load(Ordering::Relaxed),
        )
    }

    /// The file this session appends its inference trace to, when it keeps one.
    pub fn trace_path(&self) -> Option<&Path> {
        self.trace.as_ref().map(Trace::path)
    }

    /// The last problem met talking to the agent, for people.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared.last_error).clone()
    }

    fn page(&self) -> &ShmPage {
        self.shared.page.get()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        let _ = self.waker.write_all(&[1]);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Shared {
    /// The background thread: hold the connection, notice when it breaks, reconnect.
    fn run(&self, mut connection: Option<Arc<OwnedFd>>, mut wakee: UnixStream) {
        let mut backoff = self.options.initial_backoff;
        loop {
            if let Some(fd) = connection.take() {
                self.serve(&fd, &mut wakee);
                *lock(&self.connection) = None;
                // The page first, then the id: once `is_connected` says false, the app
                // already counts into its own page, and nothing it records is lost
                // to the agent's page being swapped out afterwards.
                if let Err(e) = self.page.install_standalone(self.default_subnet) {
                    log::error!("dnngov: cannot restore the standalone page: {e}");
                }
                self.app_id.store(0, Ordering::Release);
                backoff = self.options.initial_backoff;
            }
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            match self.attempt() {
                Ok(fd) => {
                    log::info!(
                        "dnngov: registered with the agent as app {}",
                        self.app_id.load(Ordering::Relaxed)
                    );
                    connection = Some(fd);
                    continue;
                }
                Err(AttemptError::Refused(e)) => {
                    log::warn!("dnngov: the agent refused the registration: {}", e.message);
                    self.remember_error(e.message);
                }
                Err(AttemptError::Unavailable(why)) => {
                    log::debug!("dnngov: agent unavailable: {why}");
                    self.remember_error(why);
                }
            }
            if wait_readable(wakee.as_fd(), Some(backoff)) {
                return;
            }
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// Waits on a live connection until it breaks or the session ends, reading replies.
    fn serve(&self, fd: &OwnedFd, wakee: &mut UnixStream) {
        let mut buf = vec![0u8; MAX_PACKET_BYTES];
        loop {
            let mut fds = [
                PollFd::new(fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(wakee.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("dnngov: poll failed: {e}");
                    return;
                }
            }
            let woken = fds[1].revents().is_some_and(|r| !r.is_empty());
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if woken {
                let mut byte = [0u8; 1];
                let _ = wakee.read(&mut byte);
                return;
            }
            if events.contains(PollFlags::POLLIN) {
                match nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => match serde_json::from_slice::<Reply>(&buf[..n]) {
                        Ok(Reply::Error { code, message }) => {
                            log::warn!("dnngov: the agent answered {code:?}: {message}");
                            self.remember_error(message);
                        }
                        Ok(_) => {}
                        Err(e) => log::warn!("dnngov: unreadable message from the agent: {e}"),
                    },
                }
            } else if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                return;
            }
        }
    }

    /// One connection and registration attempt; on success the connection is stored
    /// for `set_target` and returned for the worker to serve.
    fn attempt(&self) -> Result<Arc<OwnedFd>, AttemptError> {
        let path = &self.options.socket_path;
        let unavailable = |what: &str, e: nix::Error| {
            AttemptError::Unavailable(format!("{what} {}: {e}", path.display()))
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| unavailable("cannot create a socket for", e))?;
        let addr = UnixAddr::new(path).map_err(|e| unavailable("bad socket path", e))?;
        connect(fd.as_raw_fd(), &addr).map_err(|e| unavailable("cannot connect to", e))?;
        let timeout = TimeVal::new(
            self.options.reply_timeout.as_secs() as i64,
            self.options.reply_timeout.subsec_micros() as i64,
        );
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| unavailable("cannot set a timeout on", e))?;
        let sent = lock(&self.request).clone();
        let registered_target = sent.target.clone();
        let packet = encode(&Request::Register(sent));
        if let Err(e) = send(fd.as_raw_fd(), &packet, MsgFlags::MSG_NOSIGNAL) {
            // An agent that refuses the connection itself (too many connections) answers
            // and closes before the registration goes out: its answer says why.
            if let Ok((Some(Reply::Error { code, message }), _)) = receive_reply(&fd) {
                return Err(AttemptError::Refused(ProtoError { code, message }));
            }
            return Err(unavailable("cannot send to", e));
        }
        let (reply, memfd) = receive_reply(&fd).map_err(|e| unavailable("no answer from", e))?;
        match reply {
            Some(Reply::Accepted { app_id, .. }) => {
                let memfd = memfd.ok_or_else(|| {
                    AttemptError::Unavailable("the agent's answer carried no shared memory".into())
                })?;
                self.page
                    .install_agent_page(&memfd)
                    .map_err(AttemptError::Unavailable)?;
                // No timeout on the live connection: the worker blocks in poll.
                let _ = setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 0));
                self.app_id.store(app_id, Ordering::Release);
                *lock(&self.last_error) = None;
                let fd = Arc::new(fd);
                let request = lock(&self.request);
                *lock(&self.connection) = Some(fd.clone());
                if request.target != registered_target {
                    send_target(&fd, request.target.clone());
                }
                Ok(fd)
            }
            Some(Reply::Error { code, message }) => {
                Err(AttemptError::Refused(ProtoError { code, message }))
            }
            Some(other) => Err(AttemptError::Unavailable(format!(
                "unexpected answer {other:?}"
            ))),
            None => Err(AttemptError::Unavailable(
                "the agent closed the connection".into(),
            )),
        }
    }

    fn remember_error(&self, message: String) {
        *lock(&self.last_error) = Some(message);
    }
}

/// Reads one reply and the fd it may carry. `None`: the agent hung up.
fn receive_reply(fd: &OwnedFd) -> nix::Result<(Option<Reply>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_PACKET_BYTES];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = c {
                fds.extend(received);
            }
        }
        (msg.bytes, fds)
    };
    // SAFETY: the kernel just installed these descriptors in our table for us alone.
    let mut owned: Vec<OwnedFd> = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if len == 0 {
        return Ok((None, None));
    }
    let reply = serde_json::from_slice(&buf[..len]).map_err(|_| nix::errno::Errno::EBADMSG)?;
    Ok((Some(reply), owned.pop()))
}

fn send_target(fd: &OwnedFd, target: Target) {
    let packet = encode(&Request::SetTarget { target });
    let _ = send(fd.as_raw_fd(), &packet, MsgFlags::MSG_NOSIGNAL);
}

/// Refusals that say "not now" rather than "not this request": the agent is full, or it
/// failed on its side, or it gave up waiting for this client's registration.
fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::TooManyApps
            | ErrorCode::TooManyConnections
            | ErrorCode::RegistrationTimeout
            | ErrorCode::Internal
    )
}

/// True when `fd` became readable (the session is closing) within `timeout`.
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    let timeout = match timeout {
        Some(t) => PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
        None => PollTimeout::NONE,
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// `CLOCK_MONOTONIC` in ns, the clock the agent and the eBPF probes use
/// (`bpf_ktime_get_ns`).
#[inline]
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these small locks leaves valid data.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
