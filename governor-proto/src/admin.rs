//! The admin protocol: what `dnngovctl` (and a profiler, through `dnngov-client`) asks the
//! running agent, and the agent's answers.
//!
//! A separate socket from the apps' (default [`DEFAULT_ADMIN_SOCKET`], mode 0660, group
//! `dnngov`), so an app's permission to register does not give it the operator's powers.
//! One JSON request per `SOCK_SEQPACKET` connection, one JSON reply, then the agent closes
//! it. Requests are tagged by `"command"`, replies by `"reply"`.
//!
//! Only types and limits live here; the agent serves the socket and the client library
//! (`dnngov_client::admin`) talks to it.

use serde::{Deserialize, Serialize};

/// Default path of the admin socket.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/dnngov/admin.sock";

/// Environment variable that points a client (a profiler) at another admin socket.
pub const ADMIN_SOCKET_ENV: &str = "DNNGOV_ADMIN_SOCKET";

/// Admin messages are small; a larger request is refused.
pub const MAX_ADMIN_PACKET: usize = 1 << 20;

/// How long a [`AdminRequest::Hold`] lasts when it names no lease, in milliseconds.
pub const DEFAULT_HOLD_LEASE_MS: u64 = 30_000;
/// Shortest lease a hold may ask for, in milliseconds.
pub const MIN_HOLD_LEASE_MS: u64 = 100;
/// Longest lease a hold may ask for, in milliseconds (10 minutes): a profiler that dies
/// leaves the clocks held for at most this long.
pub const MAX_HOLD_LEASE_MS: u64 = 600_000;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "command",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "StrictRequest"
)]
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
    /// Pins the named kinds of domain (every governed domain of that kind) at these
    /// frequencies, over the policy's choice, until [`AdminRequest::Release`] or until the
    /// lease runs out. Each value is snapped to the nearest frequency the domain offers
    /// that is not above its ceiling now. A hold replaces the one before it: sending the
    /// same hold again renews its lease.
    Hold {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_hz: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu_hz: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mem_hz: Option<u64>,
        /// Default [`DEFAULT_HOLD_LEASE_MS`]; [`MIN_HOLD_LEASE_MS`]..=[`MAX_HOLD_LEASE_MS`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    },
    /// Ends the hold: the policy sets every domain again.
    Release,
}

/// [`AdminRequest`] as it is parsed. serde lets a unit variant of an internally tagged
/// enum carry any other field (`{"command": "status", "bogus": 1}` would pass), so the
/// commands without fields are parsed as empty structs, which do refuse unknown fields.
#[derive(Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
enum StrictRequest {
    Status {},
    Apps {},
    SetTarget {
        app: String,
        deadline_ms: Option<f64>,
        accuracy_floor_pct: Option<f64>,
        #[serde(default)]
        clear: bool,
    },
    Hold {
        #[serde(default)]
        cpu_hz: Option<u64>,
        #[serde(default)]
        gpu_hz: Option<u64>,
        #[serde(default)]
        mem_hz: Option<u64>,
        #[serde(default)]
        lease_ms: Option<u64>,
    },
    Release {},
}

impl From<StrictRequest> for AdminRequest {
    fn from(request: StrictRequest) -> Self {
        match request {
            StrictRequest::Status {} => AdminRequest::Status,
            StrictRequest::Apps {} => AdminRequest::Apps,
            StrictRequest::SetTarget {
                app,
                deadline_ms,
                accuracy_floor_pct,
                clear,
            } => AdminRequest::SetTarget {
                app,
                deadline_ms,
                accuracy_floor_pct,
                clear,
            },
            StrictRequest::Hold {
                cpu_hz,
                gpu_hz,
                mem_hz,
                lease_ms,
            } => AdminRequest::Hold {
                cpu_hz,
                gpu_hz,
                mem_hz,
                lease_ms,
            },
            StrictRequest::Release {} => AdminRequest::Release,
        }
    }
}

impl AdminRequest {
    /// Whether the request only reads (status, apps): open to everyone who may connect.
    pub fn is_read_only(&self) -> bool {
        matches!(self, AdminRequest::Status | AdminRequest::Apps)
    }
}

/// What the agent answers.
// One reply per connection, built once and sent: boxing the status would only add an
// indirection to every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum AdminReply {
    Status(StatusReport),
    Apps {
        apps: Vec<AppStatus>,
    },
    /// A hold is in force: what was set where, and until when.
    Held(HoldStatus),
    Done {
        message: String,
    },
    Error {
        message: String,
    },
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
    /// The board's energy counter, when there is a power source (sensor or estimate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy: Option<EnergyStatus>,
    /// The frequency hold in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldStatus>,
    /// The policy's plan in force: what made it and when, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    pub apps: Vec<AppStatus>,
    /// Where each kind of telemetry comes from (eBPF, procfs, shared memory, ...).
    pub telemetry: Vec<SourceStatus>,
    /// Degraded modes and other things an operator should know, one sentence each.
    pub notes: Vec<String>,
}

/// What a frequency domain clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    Cpu,
    Gpu,
    Memory,
}

impl DomainKind {
    /// The field of [`AdminRequest::Hold`] that names this kind.
    pub fn hold_field(self) -> &'static str {
        match self {
            DomainKind::Cpu => "cpu_hz",
            DomainKind::Gpu => "gpu_hz",
            DomainKind::Memory => "mem_hz",
        }
    }
}

impl std::fmt::Display for DomainKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DomainKind::Cpu => "CPU",
            DomainKind::Gpu => "GPU",
            DomainKind::Memory => "memory",
        })
    }
}

/// One frequency domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub name: String,
    /// What it clocks (absent from agents that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DomainKind>,
    pub current_hz: Option<u64>,
    pub min_hz: u64,
    pub max_hz: u64,
    /// Who sets it: "dnngov" (and how), a hold, or the kernel governor's name.
    pub set_by: String,
    /// Why it has this frequency, per the last decision (or the hold).
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

/// The board's energy since the agent started, and when it was last counted.
///
/// Two readings give the average power in between:
/// `(b.joules - a.joules) / ((b.at_monotonic_ns - a.at_monotonic_ns) / 1e9)` watts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyStatus {
    /// Whole-board energy (the input rail where the sensor has one), in joules.
    pub joules: f64,
    /// `CLOCK_MONOTONIC` time of the reading the count goes up to, in nanoseconds.
    pub at_monotonic_ns: u64,
    /// Whether any estimated (not measured) power went into the count.
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
    /// What is wrong with the figures the app wrote in its shared page, when something is
    /// (more misses than inferences, a sub-network not in its library, a latency or a
    /// time stamp that cannot be); the figures above are then clamped to what can be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_problem: Option<String>,
}

/// The plan in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    /// What made the policy adopt it, a sentence (an event, such as an app's lasting
    /// slow-down, or the rule of a periodic run, such as a saving).
    pub why: String,
    /// Seconds since it was adopted.
    pub age_s: f64,
    /// The board power the policy predicted for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_w: Option<f64>,
}

/// A frequency hold in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// Every domain held, with what was asked and what was set.
    pub domains: Vec<HeldDomain>,
    /// The lease granted by the last hold request, in milliseconds.
    pub lease_ms: u64,
    /// Time left before the hold ends by itself, in milliseconds.
    pub expires_in_ms: u64,
    /// When it ends by itself, in seconds since the Unix epoch.
    pub expires_unix_s: f64,
}

/// One held domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldDomain {
    /// The domain's name, as in [`DomainStatus::name`].
    pub domain: String,
    pub kind: DomainKind,
    /// The frequency the hold asked for.
    pub requested_hz: u64,
    /// The frequency set: the nearest the domain offers, not above its ceiling.
    pub hz: u64,
}

impl HoldStatus {
    /// The frequency held for the first domain of `kind`, if that kind is held.
    pub fn hz_of(&self, kind: DomainKind) -> Option<u64> {
        self.domains.iter().find(|d| d.kind == kind).map(|d| d.hz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_with_only_some_fields_parses_and_unknown_fields_are_refused() {
        let request: AdminRequest =
            serde_json::from_str(r#"{"command":"hold","gpu_hz":599250000}"#).unwrap();
        assert_eq!(
            request,
            AdminRequest::Hold {
                cpu_hz: None,
                gpu_hz: Some(599_250_000),
                mem_hz: None,
                lease_ms: None
            }
        );
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(text, r#"{"command":"hold","gpu_hz":599250000}"#);
        let error = serde_json::from_str::<AdminRequest>(r#"{"command":"hold","gpu_mhz":600}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("gpu_mhz"), "{error}");
        let release: AdminRequest = serde_json::from_str(r#"{"command":"release"}"#).unwrap();
        assert_eq!(release, AdminRequest::Release);
    }

    #[test]
    fn commands_without_fields_refuse_unknown_fields_too() {
        for command in ["status", "apps", "release"] {
            let plain = format!(r#"{{"command":"{command}"}}"#);
            let request: AdminRequest = serde_json::from_str(&plain).unwrap();
            assert_eq!(serde_json::to_string(&request).unwrap(), plain);
            let bogus = format!(r#"{{"command":"{command}","bogus":1}}"#);
            let error = serde_json::from_str::<AdminRequest>(&bogus)
                .expect_err(&bogus)
                .to_string();
            assert!(error.contains("unknown field `bogus`"), "{bogus}: {error}");
        }
        let error = serde_json::from_str::<AdminRequest>(r#"{"command":"reboot"}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown variant `reboot`"), "{error}");
        let error = serde_json::from_str::<AdminRequest>(
            r#"{"command":"set_target","app":"a","deadline_ms":5,"deadline":5}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown field `deadline`"), "{error}");
    }

    #[test]
    fn a_status_from_an_agent_without_hold_or_energy_still_parses() {
        let text = r#"{"reply":"status","version":"0.1.0","pid":1,"uptime_s":1.0,
            "sysfs_root":"/","app_socket":"/run/dnngov/agent.sock",
            "domains":[{"name":"EMC","current_hz":null,"min_hz":1,"max_hz":2,
                        "set_by":"dnngov (rate lock)","reason":""}],
            "power":[],"apps":[],"telemetry":[],"notes":[]}"#;
        let AdminReply::Status(status) = serde_json::from_str(text).unwrap() else {
            panic!("not a status");
        };
        assert_eq!(status.hold, None);
        assert_eq!(status.energy, None);
        assert_eq!(status.domains[0].kind, None);
    }

    #[test]
    fn numbers_read_from_json_are_written_back_the_same() {
        // A decimal that serde_json's default fast parser reads one unit in the last place
        // off, so that a status relayed by dnngovctl changed on the way (found by the
        // admin fuzz target); the workspace enables its correctly rounded parser.
        let text = "0.900719925474099325";
        let x: f64 = serde_json::from_str(text).unwrap();
        assert_eq!(x, text.parse::<f64>().unwrap());
        let again: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
        assert_eq!(again, x);
    }

    #[test]
    fn a_held_reply_round_trips() {
        let reply = AdminReply::Held(HoldStatus {
            domains: vec![HeldDomain {
                domain: "devfreq 17000000.gv11b".into(),
                kind: DomainKind::Gpu,
                requested_hz: 600_000_000,
                hz: 599_250_000,
            }],
            lease_ms: 30_000,
            expires_in_ms: 29_999,
            expires_unix_s: 1.7e9,
        });
        let text = serde_json::to_string(&reply).unwrap();
        assert!(text.starts_with(r#"{"reply":"held","#), "{text}");
        assert_eq!(serde_json::from_str::<AdminReply>(&text).unwrap(), reply);
        let AdminReply::Held(hold) = reply else {
            unreachable!()
        };
        assert_eq!(hold.hz_of(DomainKind::Gpu), Some(599_250_000));
        assert_eq!(hold.hz_of(DomainKind::Cpu), None);
    }
}

#[cfg(test)]
mod documented {
    use super::*;

    /// The admin table of docs/protocol.md: every request shown parses, and every reply
    /// shown in full parses.
    #[test]
    fn documented_admin_messages_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let text = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
        let mut requests = 0;
        for line in text.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 4 || !cells[1].starts_with("`{\"command\"") {
                continue;
            }
            let request = cells[1].trim_matches('`');
            serde_json::from_str::<AdminRequest>(request)
                .unwrap_or_else(|e| panic!("{request}: {e}"));
            requests += 1;
            let reply = cells[2].split('`').nth(1).expect("a reply in backquotes");
            if !reply.contains("...") {
                serde_json::from_str::<AdminReply>(reply)
                    .unwrap_or_else(|e| panic!("{reply}: {e}"));
            }
        }
        assert_eq!(requests, 5, "docs/protocol.md shows every admin request");
    }
}
