//! docs/protocol.md documents the shared-memory layout; this keeps it honest.

use governor_proto::shm::layout_table;
use std::collections::BTreeMap;

fn documented_rows() -> BTreeMap<String, (usize, usize)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | offset | size | writer | meaning |
        if cells.len() < 5 {
            continue;
        }
        let name = cells[1].trim_matches('`');
        if !(name.starts_with("header.") || name.starts_with("agent.") || name.starts_with("app."))
        {
            continue;
        }
        let (Ok(offset), Ok(size)) = (cells[2].parse(), cells[3].parse()) else {
            panic!("row for {name} has no numeric offset and size: {line}");
        };
        rows.insert(name.to_string(), (offset, size));
    }
    rows
}

#[test]
fn documented_offsets_match_the_code() {
    let documented = documented_rows();
    let code: BTreeMap<String, (usize, usize)> = layout_table()
        .into_iter()
        .map(|(name, offset, size)| (name.to_string(), (offset, size)))
        .collect();
    assert_eq!(
        documented, code,
        "docs/protocol.md and shm::layout_table differ"
    );
}

/// Every error code, by a match that stops compiling when a code is added and not
/// listed here.
fn every_error_code() -> Vec<governor_proto::ErrorCode> {
    use governor_proto::ErrorCode::*;
    let all = vec![
        Malformed,
        UnknownField,
        VersionMismatch,
        PacketTooLarge,
        InvalidName,
        InvalidPid,
        InvalidDevices,
        InvalidSubnets,
        DuplicateSubnetId,
        InvalidAccuracy,
        InvalidLatency,
        InvalidDeadline,
        InvalidTarget,
        PidMismatch,
        AlreadyRegistered,
        NotRegistered,
        TooManyApps,
        TooManyConnections,
        RegistrationTimeout,
        Internal,
    ];
    for code in &all {
        match code {
            Malformed | UnknownField | VersionMismatch | PacketTooLarge | InvalidName
            | InvalidPid | InvalidDevices | InvalidSubnets | DuplicateSubnetId
            | InvalidAccuracy | InvalidLatency | InvalidDeadline | InvalidTarget | PidMismatch
            | AlreadyRegistered | NotRegistered | TooManyApps | TooManyConnections
            | RegistrationTimeout | Internal => {}
        }
    }
    all
}

#[test]
fn every_error_code_is_documented_and_every_documented_code_exists() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let text = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    // | `code` | when |
    let documented: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            (cells.len() == 4 && cells[1].starts_with('`') && !cells[1].contains('.'))
                .then(|| cells[1].trim_matches('`').to_string())
        })
        .filter(|name| {
            serde_json::from_value::<governor_proto::ErrorCode>(serde_json::json!(name)).is_ok()
                || name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .collect();
    let code: std::collections::BTreeSet<String> = every_error_code()
        .into_iter()
        .map(|c| {
            serde_json::to_value(c)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        documented, code,
        "the error codes of docs/protocol.md and ErrorCode"
    );
}
