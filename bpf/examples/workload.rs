//! Child process for the telemetry tests and the benchmark: a known amount of
//! CPU work or a known series of inferences, driven over stdin/stdout so the
//! parent can start watching or probing before anything happens.
//!
//! Protocol: prints `ready <pid>`, waits for one line on stdin, does its work,
//! prints its own measurements, then waits for stdin to close before exiting
//! (so the parent can read figures while the process still exists).
//!
//! ```text
//! workload busy <ms>                  spin until this process used <ms> of CPU
//! workload idle                       do nothing
//! workload markers <app> <n>          n inferences through the linked markers
//! workload dlopen <lib.so> <app> <n>  the same through a library opened now
//! workload switch <n>                 n ping-pongs between two threads
//! workload tight <app> <n>            n begin/end pairs back to back; prints ns per pair
//! ```

use std::io::{BufRead, Write};
use std::time::Duration;

type Begin = extern "C" fn(u32, u64, u32, u64);
type End = extern "C" fn(u32, u64);

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn say(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{msg}");
    let _ = out.flush();
}

/// Inference `i` sleeps 2 ms against a 1 ms deadline when `i % 4 == 0` (always
/// a miss), else 1 ms against 500 ms (never a miss on any sane scheduler), and
/// every tenth has no deadline at all.
fn plan(i: u64) -> (Duration, u64) {
    if i % 10 == 9 {
        (Duration::from_millis(1), 0)
    } else if i.is_multiple_of(4) {
        (Duration::from_millis(2), 1_000_000)
    } else {
        (Duration::from_millis(1), 500_000_000)
    }
}

fn run_markers(begin: Begin, end: End, app: u32, n: u64) {
    for seq in 0..n {
        let (sleep, deadline) = plan(seq);
        let t0 = clock(libc::CLOCK_MONOTONIC);
        begin(app, seq, (seq % 3) as u32, deadline);
        std::thread::sleep(sleep);
        end(app, seq);
        let t1 = clock(libc::CLOCK_MONOTONIC);
        say(&format!("inference {seq} {} {deadline}", t1 - t0));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or("") };
    say(&format!("ready {}", std::process::id()));
    wait_line();
    match arg(0) {
        "busy" => {
            let want = arg(1).parse::<u64>().expect("busy <ms>") * 1_000_000;
            let start = clock(libc::CLOCK_PROCESS_CPUTIME_ID);
            let mut x = 0u64;
            while clock(libc::CLOCK_PROCESS_CPUTIME_ID) - start < want {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            say(&format!(
                "cpu {}",
                clock(libc::CLOCK_PROCESS_CPUTIME_ID) - start
            ));
        }
        "idle" => {}
        "markers" => {
            let app = arg(1).parse().expect("markers <app> <n>");
            let n = arg(2).parse().expect("markers <app> <n>");
            run_markers(
                dnngov_client::dnngov_marker_begin,
                dnngov_client::dnngov_marker_end,
                app,
                n,
            );
        }
        "dlopen" => {
            let path = std::ffi::CString::new(arg(1)).expect("dlopen <lib> <app> <n>");
            let app = arg(2).parse().expect("dlopen <lib> <app> <n>");
            let n = arg(3).parse().expect("dlopen <lib> <app> <n>");
            // SAFETY: dlopen/dlsym with valid C strings; the symbols are the
            // client's `extern "C"` markers with exactly these signatures.
            let (begin, end) = unsafe {
                let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
                assert!(!lib.is_null(), "dlopen {} failed", arg(1));
                let b = libc::dlsym(lib, c"dnngov_marker_begin".as_ptr());
                let e = libc::dlsym(lib, c"dnngov_marker_end".as_ptr());
                assert!(
                    !b.is_null() && !e.is_null(),
                    "markers missing in {}",
                    arg(1)
                );
                (
                    std::mem::transmute::<*mut libc::c_void, Begin>(b),
                    std::mem::transmute::<*mut libc::c_void, End>(e),
                )
            };
            run_markers(begin, end, app, n);
        }
        "tight" => {
            let app: u32 = arg(1).parse().expect("tight <app> <n>");
            let n: u64 = arg(2).parse().expect("tight <app> <n>");
            let t0 = clock(libc::CLOCK_MONOTONIC);
            for seq in 0..n {
                dnngov_client::dnngov_marker_begin(app, seq, 0, 0);
                dnngov_client::dnngov_marker_end(app, seq);
            }
            let t1 = clock(libc::CLOCK_MONOTONIC);
            say(&format!("pair_ns {}", (t1 - t0) as f64 / n as f64));
        }
        "switch" => {
            let n: u64 = arg(1).parse().expect("switch <n>");
            let (to_peer, from_main) = std::sync::mpsc::sync_channel::<u64>(0);
            let (to_main, from_peer) = std::sync::mpsc::sync_channel::<u64>(0);
            let peer = std::thread::spawn(move || {
                while let Ok(v) = from_main.recv() {
                    if to_main.send(v).is_err() {
                        break;
                    }
                }
            });
            for i in 0..n {
                to_peer.send(i).expect("peer alive");
                from_peer.recv().expect("peer alive");
            }
            drop(to_peer);
            let _ = peer.join();
        }
        other => panic!("unknown workload {other:?}"),
    }
    say("done");
    wait_line();
}
