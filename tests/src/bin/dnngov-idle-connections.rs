//! Holds idle connections to a socket, as a neighbour jamming it would: connects COUNT
//! times and sends nothing.
//!
//! Usage: dnngov-idle-connections SOCKET COUNT
//! Prints `connected N failed F` once connected. Then each line on stdin asks where the
//! connections stand, answered by one line: `held H closed C refused CODE=N ...`, where H
//! are still open and silent, C were closed without a word, and N were answered with the
//! error CODE (an app socket's error code, or `admin` for an admin socket's error). Exits
//! at the end of stdin, closing them all.

use nix::errno::Errno;
use nix::sys::socket::{
    connect, recv, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};

enum State {
    Held(OwnedFd),
    Closed,
    Refused(String),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: dnngov-idle-connections SOCKET COUNT");
        std::process::exit(2);
    }
    let count: usize = args[2].parse().expect("COUNT is a number");
    let addr = UnixAddr::new(args[1].as_str()).expect("a socket path");
    let mut connections = Vec::new();
    let mut failed = 0;
    for _ in 0..count {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => connections.push(State::Held(fd)),
            Err(_) => failed += 1,
        }
    }
    let mut out = std::io::stdout();
    writeln!(out, "connected {} failed {failed}", connections.len()).unwrap();
    out.flush().unwrap();
    for _ in std::io::stdin().lock().lines() {
        for state in &mut connections {
            if let State::Held(fd) = state {
                if let Some(next) = look(fd) {
                    *state = next;
                }
            }
        }
        let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
        let (mut held, mut closed) = (0, 0);
        for state in &connections {
            match state {
                State::Held(_) => held += 1,
                State::Closed => closed += 1,
                State::Refused(code) => *refused.entry(code).or_default() += 1,
            }
        }
        let refused: Vec<String> = refused.iter().map(|(c, n)| format!("{c}={n}")).collect();
        writeln!(
            out,
            "held {held} closed {closed} refused {}",
            refused.join(" ")
        )
        .unwrap();
        out.flush().unwrap();
    }
}

/// What became of a connection held so far: `None` while the agent says nothing.
fn look(fd: &OwnedFd) -> Option<State> {
    let mut buffer = vec![0u8; 70_000];
    match recv(fd.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
        Err(Errno::EAGAIN) => None,
        Ok(0) | Err(_) => Some(State::Closed),
        Ok(len) => {
            let reply: serde_json::Value =
                serde_json::from_slice(&buffer[..len]).unwrap_or_default();
            let code = if reply["reply"] == "error" {
                "admin".to_string()
            } else {
                reply["code"].as_str().unwrap_or("unknown").to_string()
            };
            Some(State::Refused(code))
        }
    }
}
