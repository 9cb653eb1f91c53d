//! The admin socket: what `dnngovctl` asks the running agent, and the agent's answers.
//!
//! A separate socket from the apps' (default `/run/dnngov/admin.sock`, mode 0660, group
//! `dnngov`), so an app's permission to register does not give it the operator's powers.
//! One JSON request per connection, one JSON reply, then the agent closes it.

use crate::socket::bind_seqpacket;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, connect, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use nix::sys::time::TimeVal;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Default path of the admin socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/dnngov/admin.sock";

/// Admin messages are small; anything larger is refused.
const MAX_ADMIN_PACKET: usize = 1 << 20;

/// What `dnngovctl` asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    Status,
    Apps,
    /// Operator override of an app's target (by id or unique name); `clear` removes it.
    SetTarget {
        app: String,
        deadline_ms: Option<f64>,
        accuracy_floor_pct: Option<f64>,
        #[serde(default)]
        clear: bool,
    },
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum AdminReply {
    Status(StatusReport),
    Apps { apps: Vec<AppStatus> },
    Done { message: String },
    Error { message: String },
}

/// The whole picture `dnngovctl status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusReport {
    pub version: String,
    pub pid: u32,
    pub uptime_s: f64,
    pub sysfs_root: String,
    pub app_socket: String,
    pub domains: Vec<DomainStatus>,
    pub power: Vec<RailStatus>,
    pub apps: Vec<AppStatus>,
    /// Where each kind of telemetry comes from (eBPF, procfs, shared memory, ...).
    pub telemetry: Vec<SourceStatus>,
    /// Degraded modes and other things an operator should know, one sentence each.
    pub notes: Vec<String>,
}

/// One frequency domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub name: String,
    pub current_hz: Option<u64>,
    pub min_hz: u64,
    pub max_hz: u64,
    /// Who sets it: "dnngov" or the kernel governor's name.
    pub set_by: String,
    /// Why it has this frequency, per the last decision.
    pub reason: String,
}

/// One power rail (or the estimate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RailStatus {
    pub rail: String,
    pub watts: f64,
    pub joules: f64,
    pub estimated: bool,
}

/// One telemetry source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub what: String,
    pub source: String,
}

/// One registered app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub app_id: u32,
    pub name: String,
    pub pid: i32,
    pub deadline_ms: f64,
    pub accuracy_floor_pct: Option<f64>,
    pub priority: u8,
    pub operator_override: bool,
    pub requested_subnet: u32,
    pub active_subnet: Option<u32>,
    pub subnets: usize,
    pub accuracy_pct: Option<f64>,
    pub inferences: u64,
    pub deadline_misses: u64,
    pub miss_pct: f64,
    pub last_latency_ms: f64,
}

impl AppStatus {
    pub fn of(app: &crate::registry::AppHandle) -> Self {
        let report = app.report();
        let target = app.target();
        let running = report.active_subnet.unwrap_or(report.requested_subnet);
        let miss_pct = if report.inferences_completed == 0 {
            0.0
        } else {
            100.0 * report.deadline_misses as f64 / report.inferences_completed as f64
        };
        Self {
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

/// Sends one request to the agent at `path` and returns its reply.
pub fn request(path: &Path, request: &AdminRequest) -> Result<AdminReply> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("creating a socket")?;
    let addr =
        UnixAddr::new(path).with_context(|| format!("admin socket path {}", path.display()))?;
    if let Err(e) = connect(fd.as_raw_fd(), &addr) {
        match e {
            Errno::ENOENT | Errno::ECONNREFUSED => bail!(
                "dnngovd is not running (nothing answers on {}): start it with `systemctl start dnngovd`",
                path.display()
            ),
            Errno::EACCES => bail!(
                "permission denied on {}: run as root or as a member of the dnngov group",
                path.display()
            ),
            e => bail!("cannot connect to {}: {e}", path.display()),
        }
    }
    let timeout = TimeVal::new(5, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).context("setting a timeout")?;
    let bytes = serde_json::to_vec(request).context("encoding the request")?;
    send(fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
        .with_context(|| format!("sending to {}", path.display()))?;
    let mut buffer = vec![0u8; MAX_ADMIN_PACKET];
    let len = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())
        .with_context(|| format!("waiting for dnngovd's answer on {}", path.display()))?;
    if len == 0 {
        bail!("dnngovd closed the admin connection without answering");
    }
    serde_json::from_slice(&buffer[..len]).context("dnngovd's answer is not a valid reply")
}
