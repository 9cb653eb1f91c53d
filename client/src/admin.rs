//! A blocking client of the agent's admin socket: one request, one reply.
//!
//! `dnngovctl` uses it, and so does [`crate::profile::sweep`] to hold frequencies and read
//! the energy counter. The socket is root's and group `dnngov`'s (mode 0660). Never call
//! it on an inference path: it makes system calls and may wait up to its timeout.

use governor_proto::admin::{
    AdminReply, AdminRequest, HoldStatus, StatusReport, ADMIN_SOCKET_ENV, DEFAULT_ADMIN_SOCKET,
    MAX_ADMIN_PACKET,
};
use nix::errno::Errno;
use nix::sys::socket::{
    connect, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::time::TimeVal;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long [`request`] waits for the agent's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an admin request got no usable answer. Every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "dnngovd is not running (nothing answers on {}): start it with `systemctl start dnngovd`",
        path.display()
    )]
    NotRunning { path: PathBuf },
    #[error(
        "permission denied on {}: run as root or as a member of the dnngov group",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("admin socket path {}: {source}", path.display())]
    BadPath { path: PathBuf, source: Errno },
    #[error("cannot {what} {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        what: &'static str,
        source: Errno,
    },
    #[error("dnngovd did not answer on {} within {:.1} s", path.display(), timeout.as_secs_f64())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("dnngovd closed the admin connection on {} without answering", path.display())]
    Closed { path: PathBuf },
    #[error("dnngovd's answer on {} is not a valid reply: {source}", path.display())]
    BadReply {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("dnngovd refused: {message}")]
    Refused { message: String },
    #[error("dnngovd answered {got} on {} where {expected} was expected", path.display())]
    Unexpected {
        path: PathBuf,
        expected: &'static str,
        got: String,
    },
}

impl AdminError {
    /// True when no agent listens on the socket (as opposed to one that refused or failed).
    pub fn is_not_running(&self) -> bool {
        matches!(self, AdminError::NotRunning { .. })
    }
}

/// The admin socket to use: `$DNNGOV_ADMIN_SOCKET`, else `/run/dnngov/admin.sock`.
pub fn default_socket() -> PathBuf {
    std::env::var_os(ADMIN_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET))
}

/// Sends one request to the agent at `path` and returns its reply, waiting at most
/// [`DEFAULT_TIMEOUT`]. An [`AdminReply::Error`] is a reply, not an `Err`.
pub fn request(path: &Path, request: &AdminRequest) -> Result<AdminReply, AdminError> {
    request_with_timeout(path, request, DEFAULT_TIMEOUT)
}

/// [`request`] with a timeout of its own (for sending and for the answer).
pub fn request_with_timeout(
    path: &Path,
    request: &AdminRequest,
    timeout: Duration,
) -> Result<AdminReply, AdminError> {
    let socket_error = |what: &'static str| {
        move |source: Errno| AdminError::Socket {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(socket_error("create a socket for"))?;
    let addr = UnixAddr::new(path).map_err(|source| AdminError::BadPath {
        path: path.to_path_buf(),
        source,
    })?;
    if let Err(e) = connect(fd.as_raw_fd(), &addr) {
        return Err(match e {
            Errno::ENOENT | Errno::ECONNREFUSED | Errno::ENOTDIR => AdminError::NotRunning {
                path: path.to_path_buf(),
            },
            Errno::EACCES | Errno::EPERM => AdminError::PermissionDenied {
                path: path.to_path_buf(),
            },
            e => AdminError::Socket {
                path: path.to_path_buf(),
                what: "connect to",
                source: e,
            },
        });
    }
    // A zero TimeVal means "no timeout" to the kernel: wait at least a millisecond.
    let micros = timeout.as_micros().clamp(1_000, i64::MAX as u128) as i64;
    let timeval = TimeVal::new(micros / 1_000_000, micros % 1_000_000);
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeval).map_err(socket_error("set a timeout on"))?;
    setsockopt(&fd, sockopt::SendTimeout, &timeval).map_err(socket_error("set a timeout on"))?;
    let bytes = serde_json::to_vec(request).expect("admin requests always serialise");
    let timed_out = |e: Errno| matches!(e, Errno::EAGAIN | Errno::ETIMEDOUT);
    if let Err(e) = send(fd.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL) {
        return Err(if timed_out(e) {
            AdminError::Timeout {
                path: path.to_path_buf(),
                timeout,
            }
        } else {
            socket_error("send to")(e)
        });
    }
    let mut buffer = vec![0u8; MAX_ADMIN_PACKET];
    let len = match recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
        Ok(len) => len,
        Err(e) if timed_out(e) => {
            return Err(AdminError::Timeout {
                path: path.to_path_buf(),
                timeout,
            })
        }
        Err(e) => return Err(socket_error("read dnngovd's answer on")(e)),
    };
    if len == 0 {
        return Err(AdminError::Closed {
            path: path.to_path_buf(),
        });
    }
    serde_json::from_slice(&buffer[..len]).map_err(|source| AdminError::BadReply {
        path: path.to_path_buf(),
        source,
    })
}

/// The agent's status report.
pub fn status(path: &Path) -> Result<StatusReport, AdminError> {
    match refused_as_error(request(path, &AdminRequest::Status)?)? {
        AdminReply::Status(report) => Ok(report),
        other => Err(unexpected(path, "a status", &other)),
    }
}

/// Holds frequencies (see [`AdminRequest::Hold`]); `None` leaves that kind of domain to
/// the policy. Returns what the agent set.
pub fn hold(
    path: &Path,
    cpu_hz: Option<u64>,
    gpu_hz: Option<u64>,
    mem_hz: Option<u64>,
    lease: Option<Duration>,
) -> Result<HoldStatus, AdminError> {
    let request = AdminRequest::Hold {
        cpu_hz,
        gpu_hz,
        mem_hz,
        lease_ms: lease.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX)),
    };
    match refused_as_error(self::request(path, &request)?)? {
        AdminReply::Held(status) => Ok(status),
        other => Err(unexpected(path, "a hold", &other)),
    }
}

/// Ends the hold in force (if any); returns the agent's message.
pub fn release(path: &Path) -> Result<String, AdminError> {
    match refused_as_error(request(path, &AdminRequest::Release)?)? {
        AdminReply::Done { message } => Ok(message),
        other => Err(unexpected(path, "a confirmation", &other)),
    }
}

/// Turns an [`AdminReply::Error`] into [`AdminError::Refused`].
pub fn refused_as_error(reply: AdminReply) -> Result<AdminReply, AdminError> {
    match reply {
        AdminReply::Error { message } => Err(AdminError::Refused { message }),
        other => Ok(other),
    }
}

fn unexpected(path: &Path, expected: &'static str, got: &AdminReply) -> AdminError {
    let got = match got {
        AdminReply::Status(_) => "a status",
        AdminReply::Apps { .. } => "a list of apps",
        AdminReply::Held(_) => "a hold",
        AdminReply::Done { .. } => "a confirmation",
        AdminReply::Error { .. } => "an error",
    };
    AdminError::Unexpected {
        path: path.to_path_buf(),
        expected,
        got: got.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{accept, bind, listen, Backlog};
    use std::os::fd::{FromRawFd, OwnedFd};

    fn listener(path: &Path) -> OwnedFd {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
        listen(&fd, Backlog::new(4).unwrap()).unwrap();
        fd
    }

    #[test]
    fn no_agent_is_reported_with_the_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let error = status(&path).unwrap_err();
        assert!(error.is_not_running(), "{error}");
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn an_agent_that_never_answers_times_out_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _listener = listener(&path);
        let error = request_with_timeout(&path, &AdminRequest::Status, Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(error, AdminError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains("admin.sock"), "{error}");
    }

    #[test]
    fn one_request_one_reply_and_refusals_become_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = listener(&path);
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in [
                r#"{"reply":"held","domains":[],"lease_ms":100,"expires_in_ms":99,"expires_unix_s":1.0}"#,
                r#"{"reply":"error","message":"gpu_hz 1 is outside the range"}"#,
                r#"{"reply":"done","message":"released"}"#,
            ] {
                let raw = accept(listener.as_raw_fd()).unwrap();
                // SAFETY: accept returned a new descriptor nobody else owns.
                let connection = unsafe { OwnedFd::from_raw_fd(raw) };
                let mut buffer = vec![0u8; 4096];
                let len = recv(connection.as_raw_fd(), &mut buffer, MsgFlags::empty()).unwrap();
                seen.push(String::from_utf8(buffer[..len].to_vec()).unwrap());
                send(connection.as_raw_fd(), answer.as_bytes(), MsgFlags::empty()).unwrap();
            }
            seen
        });
        let held = hold(&path, None, Some(600_000_000), None, None).unwrap();
        assert_eq!(held.lease_ms, 100);
        let refused = hold(&path, None, Some(1), None, None).unwrap_err();
        assert!(
            refused.to_string().contains("outside the range"),
            "{refused}"
        );
        assert_eq!(release(&path).unwrap(), "released");
        let seen = server.join().unwrap();
        assert_eq!(seen[0], r#"{"command":"hold","gpu_hz":600000000}"#);
        assert_eq!(seen[2], r#"{"command":"release"}"#);
    }
}
