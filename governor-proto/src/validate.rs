//! Decoding and validation of what an app sends. Everything an app sends is untrusted:
//! this is the one place that turns bytes into a [`Request`] the agent may act on.

use crate::message::{
    ErrorCode, RegisterRequest, Reply, Request, Subnet, Target, PROTOCOL_VERSION,
};
use crate::{
    MAX_DEADLINE_MS, MAX_NAME_BYTES, MAX_PACKET_BYTES, MAX_SUBNETS, MIN_DEADLINE_MS, MIN_NAME_BYTES,
};
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;

/// A refused request: a code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        Self {
            code,
            message: message.to_string(),
        }
    }

    /// The reply that tells the app about this error.
    pub fn to_reply(&self) -> Reply {
        Reply::Error {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Serialises a message into one packet's bytes.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Our message types hold only strings, numbers, options and vectors: serialising
    // them cannot fail, and a failure would be a bug in this crate, not bad input.
    serde_json::to_vec(message).expect("protocol messages always serialise")
}

/// Decodes and validates one packet from an app.
///
/// The protocol version is checked before the strict parse, so an app of another
/// version hears "version mismatch" rather than a complaint about a field it added.
pub fn decode_request(packet: &[u8]) -> Result<Request, ProtoError> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(ProtoError::new(
            ErrorCode::PacketTooLarge,
            format!(
                "packet of {} bytes is larger than the limit of {MAX_PACKET_BYTES} bytes",
                packet.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(packet)
        .map_err(|e| ProtoError::new(ErrorCode::Malformed, format!("not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| ProtoError::new(ErrorCode::Malformed, "a message must be a JSON object"))?;
    if let Some(version) = object.get("protocol_version") {
        if version.as_u64() != Some(u64::from(PROTOCOL_VERSION)) {
            return Err(ProtoError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "the app speaks protocol version {version}, this agent speaks version \
                     {PROTOCOL_VERSION}: update the dnngov client library or the agent so \
                     they match"
                ),
            ));
        }
    }
    check_integers(object)?;
    let request: Request = serde_json::from_value(value).map_err(|e| {
        let text = e.to_string();
        let code = if text.starts_with("unknown field") || text.starts_with("unknown variant") {
            ErrorCode::UnknownField
        } else {
            ErrorCode::Malformed
        };
        ProtoError::new(code, format!("invalid message: {text}"))
    })?;
    match &request {
        Request::Register(register) => validate_register(register)?,
        Request::SetTarget { target } => validate_target(target)?,
    }
    Ok(request)
}

/// Checks that the integer fields hold integers in the range of their types. serde would
/// refuse them too, but without saying which field it was.
fn check_integers(object: &serde_json::Map<String, serde_json::Value>) -> Result<(), ProtoError> {
    const U8: (&str, i128, i128) = ("u8", 0, u8::MAX as i128);
    const U32: (&str, i128, i128) = ("u32", 0, u32::MAX as i128);
    const I32: (&str, i128, i128) = ("i32", i32::MIN as i128, i32::MAX as i128);
    let mut fields = Vec::new();
    let priority = object.get("target").and_then(|t| t.get("priority"));
    fields.push(("target.priority".to_string(), priority, U8));
    if object.get("type").and_then(|t| t.as_str()) == Some("register") {
        fields.push(("pid".to_string(), object.get("pid"), I32));
        fields.push((
            "default_subnet".to_string(),
            object.get("default_subnet"),
            U32,
        ));
        if let Some(subnets) = object.get("subnets").and_then(|s| s.as_array()) {
            for (index, subnet) in subnets.iter().enumerate() {
                fields.push((format!("subnets[{index}].id"), subnet.get("id"), U32));
            }
        }
    }
    for (name, value, (kind, min, max)) in fields {
        // Absent (or null for an optional field): serde has its say on that.
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        let number = value
            .as_i64()
            .map(i128::from)
            .or_else(|| value.as_u64().map(i128::from));
        if !number.is_some_and(|n| (min..=max).contains(&n)) {
            return Err(ProtoError::new(
                ErrorCode::Malformed,
                format!("{name} is {value}; it must be an integer from {min} to {max} ({kind})"),
            ));
        }
    }
    Ok(())
}

/// Checks a registration against every limit of the protocol.
pub fn validate_register(register: &RegisterRequest) -> Result<(), ProtoError> {
    if register.protocol_version != PROTOCOL_VERSION {
        return Err(ProtoError::new(
            ErrorCode::VersionMismatch,
            format!(
                "the app speaks protocol version {}, this agent speaks version {PROTOCOL_VERSION}",
                register.protocol_version
            ),
        ));
    }
    validate_name("app name", &register.app)
        .map_err(|m| ProtoError::new(ErrorCode::InvalidName, m))?;
    if register.pid <= 0 {
        return Err(ProtoError::new(
            ErrorCode::InvalidPid,
            format!("pid {} is not a process id", register.pid),
        ));
    }
    if register.devices.is_empty() {
        return Err(ProtoError::new(
            ErrorCode::InvalidDevices,
            "devices is empty: name at least one of \"cpu\", \"gpu\"",
        ));
    }
    let unique_devices: HashSet<_> = register.devices.iter().collect();
    if unique_devices.len() != register.devices.len() {
        return Err(ProtoError::new(
            ErrorCode::InvalidDevices,
            "devices lists a device twice",
        ));
    }
    validate_subnets(&register.subnets)?;
    validate_target(&register.target)?;
    if let Some(default) = register.default_subnet {
        if !register.subnets.iter().any(|s| s.id == default) {
            return Err(ProtoError::new(
                ErrorCode::InvalidTarget,
                format!("default_subnet {default} is not the id of any sub-network in the library"),
            ));
        }
    }
    Ok(())
}

/// Checks a sub-network library: 1..=[`MAX_SUBNETS`] entries, unique ids, valid names,
/// accuracies, latencies and costs, ordered from least to most accurate.
pub fn validate_subnets(subnets: &[Subnet]) -> Result<(), ProtoError> {
    if subnets.is_empty() || subnets.len() > MAX_SUBNETS {
        return Err(ProtoError::new(
            ErrorCode::InvalidSubnets,
            format!(
                "the library has {} sub-networks; it must have 1 to {MAX_SUBNETS}",
                subnets.len()
            ),
        ));
    }
    let mut ids = HashSet::new();
    for (index, subnet) in subnets.iter().enumerate() {
        if !ids.insert(subnet.id) {
            return Err(ProtoError::new(
                ErrorCode::DuplicateSubnetId,
                format!("sub-network id {} appears more than once", subnet.id),
            ));
        }
        validate_name(&format!("name of sub-network {}", subnet.id), &subnet.name)
            .map_err(|m| ProtoError::new(ErrorCode::InvalidName, m))?;
        if !(subnet.accuracy_pct.is_finite() && (0.0..=100.0).contains(&subnet.accuracy_pct)) {
            return Err(ProtoError::new(
                ErrorCode::InvalidAccuracy,
                format!(
                    "accuracy_pct of sub-network {} is {}; it must be a number from 0 to 100",
                    subnet.id, subnet.accuracy_pct
                ),
            ));
        }
        if let Some(latency) = subnet.latency_ms {
            if !(latency.is_finite() && latency > 0.0 && latency <= MAX_DEADLINE_MS) {
                return Err(ProtoError::new(
                    ErrorCode::InvalidLatency,
                    format!(
                        "latency_ms of sub-network {} is {latency}; it must be above 0 and at \
                         most {MAX_DEADLINE_MS}",
                        subnet.id
                    ),
                ));
            }
        }
        if let Some(cost) = subnet.relative_cost {
            if !(cost.is_finite() && cost > 0.0) {
                return Err(ProtoError::new(
                    ErrorCode::InvalidSubnets,
                    format!(
                        "relative_cost of sub-network {} is {cost}; it must be a positive number",
                        subnet.id
                    ),
                ));
            }
        }
        if index > 0 && subnet.accuracy_pct < subnets[index - 1].accuracy_pct {
            return Err(ProtoError::new(
                ErrorCode::InvalidSubnets,
                format!(
                    "sub-network {} ({} %) follows one of higher accuracy ({} %): order the \
                     library from least to most accurate",
                    subnet.id,
                    subnet.accuracy_pct,
                    subnets[index - 1].accuracy_pct
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a target: deadline, period, accuracy floor.
pub fn validate_target(target: &Target) -> Result<(), ProtoError> {
    if !(target.deadline_ms.is_finite()
        && (MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&target.deadline_ms))
    {
        return Err(ProtoError::new(
            ErrorCode::InvalidDeadline,
            format!(
                "deadline_ms is {}; it must be from {MIN_DEADLINE_MS} to {MAX_DEADLINE_MS}",
                target.deadline_ms
            ),
        ));
    }
    if let Some(period) = target.period_ms {
        if !(period.is_finite() && (MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&period)) {
            return Err(ProtoError::new(
                ErrorCode::InvalidTarget,
                format!(
                    "period_ms is {period}; it must be from {MIN_DEADLINE_MS} to {MAX_DEADLINE_MS}"
                ),
            ));
        }
    }
    if let Some(floor) = target.accuracy_floor_pct {
        if !(floor.is_finite() && (0.0..=100.0).contains(&floor)) {
            return Err(ProtoError::new(
                ErrorCode::InvalidTarget,
                format!("accuracy_floor_pct is {floor}; it must be a number from 0 to 100"),
            ));
        }
    }
    Ok(())
}

fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let len = name.len();
    if !(MIN_NAME_BYTES..=MAX_NAME_BYTES).contains(&len) {
        return Err(format!(
            "{what} is {len} bytes long; it must be {MIN_NAME_BYTES} to {MAX_NAME_BYTES} bytes"
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{what} {name:?} contains the control character {c:?}; use printable characters"
        ));
    }
    Ok(())
}
