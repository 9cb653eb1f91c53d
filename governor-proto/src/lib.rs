//! The contract between `dnngovd` and the apps it governs.
//!
//! Two channels connect an app to the agent:
//! - a Unix `SOCK_SEQPACKET` socket carrying one JSON message per packet
//!   ([`Request`] from the app, [`Reply`] from the agent), validated against the limits
//!   below before anything else looks at it;
//! - one 4 KiB shared-memory page per app ([`shm::ShmPage`]), created by the agent as a
//!   sealed memfd and passed with `SCM_RIGHTS`, through which the agent asks for a
//!   sub-network and the app reports what it runs and how fast.
//!
//! The operator's side has its own socket and messages ([`admin`]): status, target
//! overrides, and frequency holds for profiling.
//!
//! This crate has no threads, no I/O and no sysfs: it is the vocabulary both sides share.

pub mod admin;
pub mod message;
pub mod shm;
pub mod validate;

pub use message::{
    Device, ErrorCode, RegisterRequest, Reply, Request, Subnet, Target, PROTOCOL_VERSION,
};
pub use validate::{decode_request, encode, ProtoError};

/// Where the agent listens for apps unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/dnngov/agent.sock";

/// Environment variable that overrides the socket path on the client side.
pub const SOCKET_ENV: &str = "DNNGOV_SOCKET";

/// Largest packet either side sends or accepts, in bytes.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// App names: at least this many bytes ...
pub const MIN_NAME_BYTES: usize = 1;
/// ... and at most this many, of printable UTF-8.
pub const MAX_NAME_BYTES: usize = 64;

/// A sub-network library holds at least one and at most this many entries.
pub const MAX_SUBNETS: usize = 32;

/// Shortest deadline an app may ask for, in milliseconds.
pub const MIN_DEADLINE_MS: f64 = 0.1;
/// Longest deadline an app may ask for, in milliseconds (60 s).
pub const MAX_DEADLINE_MS: f64 = 60_000.0;

/// Apps registered at once; the next gets [`ErrorCode::TooManyApps`].
pub const MAX_APPS: usize = 64;

/// Connections that have not registered yet, held at once. They have a pool of their own,
/// apart from the [`MAX_APPS`] registered ones, so connections that never register cannot
/// take a registered app's place; one more gets [`ErrorCode::TooManyConnections`].
pub const MAX_PENDING_CONNECTIONS: usize = 128;

/// Connections that have not registered yet, held at once for one user (uid), so that one
/// user cannot take the whole pool of [`MAX_PENDING_CONNECTIONS`].
pub const MAX_PENDING_PER_UID: usize = 16;

/// How long a connection may stay open without registering, in milliseconds; then the
/// agent sends [`ErrorCode::RegistrationTimeout`] and closes it.
pub const REGISTRATION_TIMEOUT_MS: u64 = 5_000;
