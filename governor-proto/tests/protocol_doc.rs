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
