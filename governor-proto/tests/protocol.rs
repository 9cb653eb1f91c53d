//! Wire messages: round trips, and every invalid field refused with the right code.

use governor_proto::{
    decode_request, encode, Device, ErrorCode, RegisterRequest, Reply, Request, Subnet, Target,
    MAX_PACKET_BYTES, PROTOCOL_VERSION,
};
use serde_json::{json, Value};

fn valid_register() -> Value {
    json!({
        "type": "register",
        "protocol_version": PROTOCOL_VERSION,
        "app": "resnet-demo",
        "pid": 1234,
        "devices": ["cpu", "gpu"],
        "subnets": [
            {"id": 0, "name": "small", "accuracy_pct": 74.2, "latency_ms": 41.16},
            {"id": 1, "name": "medium", "accuracy_pct": 76.13, "relative_cost": 1.2},
            {"id": 5, "name": "large", "accuracy_pct": 79.03, "latency_ms": 61.73}
        ],
        "target": {"deadline_ms": 60.0, "period_ms": 66.7, "accuracy_floor_pct": 76.0, "priority": 2}
    })
}

fn decode(value: &Value) -> Result<Request, governor_proto::ProtoError> {
    decode_request(value.to_string().as_bytes())
}

#[test]
fn register_round_trips() {
    let request = Request::Register(RegisterRequest {
        protocol_version: PROTOCOL_VERSION,
        app: "detector".into(),
        pid: 42,
        devices: vec![Device::Gpu],
        subnets: vec![
            Subnet {
                id: 3,
                name: "s".into(),
                accuracy_pct: 70.0,
                latency_ms: Some(10.0),
                relative_cost: None,
            },
            Subnet {
                id: 4,
                name: "l".into(),
                accuracy_pct: 75.5,
                latency_ms: None,
                relative_cost: Some(2.5),
            },
        ],
        target: Target {
            deadline_ms: 33.3,
            period_ms: None,
            accuracy_floor_pct: Some(71.0),
            priority: 9,
        },
        default_subnet: Some(3),
    });
    let bytes = encode(&request);
    assert_eq!(decode_request(&bytes).unwrap(), request);
}

#[test]
fn fixture_message_decodes_with_defaults() {
    let Request::Register(register) = decode(&valid_register()).unwrap() else {
        panic!("expected a registration");
    };
    assert_eq!(register.subnets.len(), 3);
    assert_eq!(register.default_subnet_id(), 5, "most accurate by default");
    assert_eq!(register.target.priority, 2);
}

#[test]
fn replies_round_trip() {
    for reply in [
        Reply::Accepted {
            protocol_version: PROTOCOL_VERSION,
            app_id: 3,
            shm_size: 4096,
            initial_subnet: 2,
        },
        Reply::TargetUpdated { app_id: 3 },
        Reply::Error {
            code: ErrorCode::TooManyApps,
            message: "64 apps".into(),
        },
    ] {
        let text = encode(&reply);
        let back: Reply = serde_json::from_slice(&text).unwrap();
        assert_eq!(back, reply);
    }
    let text = String::from_utf8(encode(&Reply::Error {
        code: ErrorCode::PidMismatch,
        message: String::new(),
    }))
    .unwrap();
    assert!(text.contains(r#""code":"pid_mismatch""#), "{text}");
}

#[test]
fn set_target_round_trips() {
    let request = Request::SetTarget {
        target: Target {
            deadline_ms: 45.0,
            period_ms: None,
            accuracy_floor_pct: None,
            priority: 0,
        },
    };
    assert_eq!(decode_request(&encode(&request)).unwrap(), request);
}

/// Applies `edit` to a valid registration and expects `code`.
fn case(name: &str, code: ErrorCode, edit: impl FnOnce(&mut Value)) -> (String, ErrorCode, Value) {
    let mut value = valid_register();
    edit(&mut value);
    (name.to_string(), code, value)
}

#[test]
fn each_invalid_field_gets_its_error_code() {
    use ErrorCode::*;
    let cases = vec![
        case("other protocol version", VersionMismatch, |v| {
            v["protocol_version"] = json!(2)
        }),
        case("version as a string", VersionMismatch, |v| {
            v["protocol_version"] = json!("1")
        }),
        case("unknown top-level field", UnknownField, |v| {
            v["colour"] = json!("red")
        }),
        case("unknown subnet field", UnknownField, |v| {
            v["subnets"][0]["flops"] = json!(3)
        }),
        case("unknown target field", UnknownField, |v| {
            v["target"]["fps"] = json!(3)
        }),
        case("unknown message type", UnknownField, |v| {
            v["type"] = json!("hello")
        }),
        case("missing type", Malformed, |v| {
            v.as_object_mut().unwrap().remove("type");
        }),
        case("missing app", Malformed, |v| {
            v.as_object_mut().unwrap().remove("app");
        }),
        case("pid as string", Malformed, |v| v["pid"] = json!("1234")),
        case("empty name", InvalidName, |v| v["app"] = json!("")),
        case("name of 65 bytes", InvalidName, |v| {
            v["app"] = json!("x".repeat(65))
        }),
        case("name with a newline", InvalidName, |v| {
            v["app"] = json!("bad\nname")
        }),
        case("subnet name empty", InvalidName, |v| {
            v["subnets"][1]["name"] = json!("")
        }),
        case("pid zero", InvalidPid, |v| v["pid"] = json!(0)),
        case("negative pid", InvalidPid, |v| v["pid"] = json!(-5)),
        case("no devices", InvalidDevices, |v| v["devices"] = json!([])),
        case("device twice", InvalidDevices, |v| {
            v["devices"] = json!(["gpu", "gpu"])
        }),
        case("unknown device", UnknownField, |v| {
            v["devices"] = json!(["npu"])
        }),
        case("no subnets", InvalidSubnets, |v| v["subnets"] = json!([])),
        case("33 subnets", InvalidSubnets, |v| {
            let many: Vec<Value> = (0..33)
                .map(|i| json!({"id": i, "name": format!("n{i}"), "accuracy_pct": 50.0}))
                .collect();
            v["subnets"] = json!(many);
        }),
        case("unordered accuracies", InvalidSubnets, |v| {
            v["subnets"][2]["accuracy_pct"] = json!(70.0)
        }),
        case("zero relative cost", InvalidSubnets, |v| {
            v["subnets"][1]["relative_cost"] = json!(0.0)
        }),
        case("duplicate id", DuplicateSubnetId, |v| {
            v["subnets"][1]["id"] = json!(0)
        }),
        case("accuracy above 100", InvalidAccuracy, |v| {
            v["subnets"][2]["accuracy_pct"] = json!(100.5)
        }),
        case("negative accuracy", InvalidAccuracy, |v| {
            v["subnets"][0]["accuracy_pct"] = json!(-1.0)
        }),
        case("zero latency", InvalidLatency, |v| {
            v["subnets"][0]["latency_ms"] = json!(0.0)
        }),
        case("deadline too short", InvalidDeadline, |v| {
            v["target"]["deadline_ms"] = json!(0.05)
        }),
        case("deadline too long", InvalidDeadline, |v| {
            v["target"]["deadline_ms"] = json!(60_001.0)
        }),
        case("period zero", InvalidTarget, |v| {
            v["target"]["period_ms"] = json!(0.0)
        }),
        case("floor above 100", InvalidTarget, |v| {
            v["target"]["accuracy_floor_pct"] = json!(101.0)
        }),
        case("unknown default", InvalidTarget, |v| {
            v["default_subnet"] = json!(9)
        }),
        case("priority above 255", Malformed, |v| {
            v["target"]["priority"] = json!(300)
        }),
    ];
    let mut failures = Vec::new();
    for (name, code, value) in &cases {
        match decode(value) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if e.code != *code => failures.push(format!(
                "{name}: got {:?} ({}) not {code:?}",
                e.code, e.message
            )),
            Err(e) => assert!(!e.message.is_empty(), "{name}: empty message"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn version_mismatch_names_both_versions() {
    let mut value = valid_register();
    value["protocol_version"] = json!(7);
    let error = decode(&value).unwrap_err();
    assert!(error.message.contains('7'), "{}", error.message);
    assert!(
        error.message.contains(&PROTOCOL_VERSION.to_string()),
        "{}",
        error.message
    );
}

#[test]
fn garbage_and_non_objects_are_malformed() {
    for packet in [
        &b"\xff\xfe garbage"[..],
        b"",
        b"[1,2,3]",
        b"42",
        b"{\"type\":",
    ] {
        let error = decode_request(packet).unwrap_err();
        assert_eq!(error.code, ErrorCode::Malformed, "{packet:?}");
    }
}

#[test]
fn oversized_packet_is_refused_before_parsing() {
    let packet = vec![b' '; MAX_PACKET_BYTES + 1];
    assert_eq!(
        decode_request(&packet).unwrap_err().code,
        ErrorCode::PacketTooLarge
    );
}

#[test]
fn limits_are_inclusive() {
    let mut value = valid_register();
    value["app"] = json!("x".repeat(64));
    value["target"]["deadline_ms"] = json!(0.1);
    assert!(decode(&value).is_ok());
    value["target"]["deadline_ms"] = json!(60_000.0);
    let many: Vec<Value> = (0..32)
        .map(|i| json!({"id": i, "name": format!("n{i}"), "accuracy_pct": 50.0}))
        .collect();
    value["subnets"] = json!(many);
    assert!(decode(&value).is_ok());
}
