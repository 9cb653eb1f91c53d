//! Wire messages: one JSON object per `SOCK_SEQPACKET` packet.
//!
//! Every message carries a `"type"` tag. Unknown fields are rejected everywhere, so a
//! typo in a field name is an error the app sees at once, not a setting silently ignored.

use serde::{Deserialize, Serialize};

/// Version of the wire messages and of the shared-memory layout. An agent and an app of
/// different versions refuse each other with [`ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 1;

/// What an app sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The first message on a connection: who the app is, what it can run, what it needs.
    Register(RegisterRequest),
    /// A new target for an app already registered on this connection (for example a
    /// tighter deadline when the scene gets busier).
    SetTarget { target: Target },
}

/// The registration of one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// A name for logs and `dnngovctl`: 1..=64 bytes of printable UTF-8.
    pub app: String,
    /// The registering process; the agent checks it against the socket's peer credentials.
    pub pid: i32,
    /// The devices the app's inferences run on.
    pub devices: Vec<Device>,
    /// The sub-network library, ordered from the cheapest (least accurate) to the most
    /// accurate. Ids are the app's own and must be unique.
    pub subnets: Vec<Subnet>,
    /// What each inference must achieve.
    pub target: Target,
    /// The sub-network the app runs when no agent tells it otherwise (absent: the most
    /// accurate one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_subnet: Option<u32>,
}

/// A device an app's inferences use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    Gpu,
}

/// One entry of an app's sub-network library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// The app's identifier for this sub-network; what the agent asks for.
    pub id: u32,
    /// A name for people: 1..=64 bytes of printable UTF-8.
    pub name: String,
    /// Expected top-1 accuracy, in percent (0..=100).
    pub accuracy_pct: f64,
    /// Latency of one inference at full clocks, in milliseconds, when the app knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Cost relative to the other entries (any positive scale), when the app knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_cost: Option<f64>,
}

/// What an app needs from each inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Latest acceptable latency of one inference, in milliseconds (0.1 ms ..= 60 s).
    pub deadline_ms: f64,
    /// Time between frames when the app runs at a fixed rate, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_ms: Option<f64>,
    /// Lowest acceptable accuracy, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_floor_pct: Option<f64>,
    /// Higher is more important when not every app can be served (0..=255).
    #[serde(default)]
    pub priority: u8,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Registration accepted. The packet carries the shared-memory fd (`SCM_RIGHTS`).
    Accepted {
        protocol_version: u32,
        app_id: u32,
        shm_size: u32,
        initial_subnet: u32,
    },
    /// A [`Request::SetTarget`] was applied.
    TargetUpdated { app_id: u32 },
    /// The request was refused; nothing changed.
    Error { code: ErrorCode, message: String },
}

/// Why a request was refused, for programs; the accompanying message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, a field of the wrong type, or a field missing.
    Malformed,
    /// A field this version does not know.
    UnknownField,
    /// The app speaks another protocol version.
    VersionMismatch,
    /// Larger than [`crate::MAX_PACKET_BYTES`].
    PacketTooLarge,
    InvalidName,
    InvalidPid,
    InvalidDevices,
    /// Empty, too long, or not ordered from least to most accurate.
    InvalidSubnets,
    DuplicateSubnetId,
    InvalidAccuracy,
    InvalidLatency,
    InvalidDeadline,
    /// Period, accuracy floor or default sub-network out of range.
    InvalidTarget,
    /// The pid in the message is not the process at the other end of the socket.
    PidMismatch,
    /// This connection already registered an app.
    AlreadyRegistered,
    /// A request that needs a registration came first.
    NotRegistered,
    /// [`crate::MAX_APPS`] apps are registered already.
    TooManyApps,
    /// The agent holds as many connections that have not registered yet as it allows, for
    /// this user ([`crate::MAX_PENDING_PER_UID`]) or in all
    /// ([`crate::MAX_PENDING_CONNECTIONS`]); sent on connecting, then the connection closes.
    TooManyConnections,
    /// No `register` came within [`crate::REGISTRATION_TIMEOUT_MS`] of connecting; sent
    /// just before the agent closes the connection.
    RegistrationTimeout,
    /// The agent failed on its side (for example it could not create shared memory).
    Internal,
}

impl RegisterRequest {
    /// The sub-network the app runs without instructions: the declared default, or the
    /// most accurate entry.
    pub fn default_subnet_id(&self) -> u32 {
        self.default_subnet
            .or_else(|| self.subnets.last().map(|s| s.id))
            .unwrap_or(0)
    }
}
