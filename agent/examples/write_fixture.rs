//! Writes one of the fixture boards under a directory, to point dnngovd at:
//!
//! cargo run -p dnngov-agent --example write_fixture -- xavier_nx /tmp/board
//! dnngovd --sysfs-root /tmp/board ...
//!
//! Boards: xavier_nx, xavier_nx_jetpack4, orin, generic_arm, intel_laptop, no_cpufreq.

use dnngov_agent::platform::fixture;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: write_fixture BOARD DIR");
        std::process::exit(2);
    };
    let Some((_, write)) = fixture::ALL.iter().find(|(board, _)| board == name) else {
        let boards: Vec<&str> = fixture::ALL.iter().map(|(board, _)| *board).collect();
        eprintln!("unknown board {name}; boards: {}", boards.join(", "));
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    if let Err(e) = write(&dir) {
        eprintln!("cannot write {name} under {}: {e}", dir.display());
        std::process::exit(1);
    }
    println!("{name} written under {}", dir.display());
}
