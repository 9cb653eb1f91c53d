//! An app's shared page as the agent reads it (`registry::read_report`). The app writes
//! its block alone, so any bytes may be there.
//!
//! Input: 8 bytes of `CLOCK_MONOTONIC` now (little-endian), 1 byte giving the size of the
//! app's library (ids 0..n), then the page's bytes (the rest of the page is zero).
//! Checks: no panic; every figure of the report is within the documented clamps; a
//! figure is replaced exactly when it is named as a problem; the header check never
//! panics either.
#![no_main]

use dnngov_agent::registry::{read_report, MAX_REPORTED_LATENCY_NS};
use governor_proto::shm::{ShmPage, SHM_SIZE};
use governor_proto::Subnet;
use libfuzzer_sys::fuzz_target;

#[repr(C, align(64))]
struct Aligned([u8; SHM_SIZE]);

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let now = u64::from_le_bytes(data[..8].try_into().unwrap());
    let library: Vec<Subnet> = (0..u32::from(data[8] % 9))
        .map(|id| Subnet {
            id,
            name: format!("s{id}"),
            accuracy_pct: 50.0 + f64::from(id),
            latency_ms: None,
            relative_cost: None,
        })
        .collect();
    let mut bytes = Box::new(Aligned([0; SHM_SIZE]));
    let body = &data[9..];
    let n = body.len().min(SHM_SIZE);
    bytes.0[..n].copy_from_slice(&body[..n]);
    // SAFETY: 64-byte aligned, SHM_SIZE bytes, alive for the whole closure.
    let page = unsafe { ShmPage::from_ptr(bytes.0.as_ptr()) };
    let _ = page.check();

    let raw = |offset: usize| u64::from_le_bytes(bytes.0[offset..offset + 8].try_into().unwrap());
    let raw_active = u32::from_le_bytes(bytes.0[128..132].try_into().unwrap());
    let (heartbeat, completed, misses, latency, begin) =
        (raw(136), raw(144), raw(152), raw(160), raw(168));

    let report = read_report(page, &library, || now);
    let problems = report.problems;

    // Counters are taken as written.
    assert_eq!(report.inferences_completed, completed);
    assert_eq!(report.latency_sum_ns, raw(176));
    // The sub-network is one of the library's, or none.
    if let Some(active) = report.active_subnet {
        assert!(library.iter().any(|s| s.id == active), "active {active}");
    }
    assert_eq!(
        problems.unknown_subnet.is_some(),
        raw_active != u32::MAX && !library.iter().any(|s| s.id == raw_active)
    );
    // Misses never exceed inferences.
    assert!(report.deadline_misses <= report.inferences_completed);
    assert_eq!(problems.misses.is_some(), misses > completed);
    // A latency is at most an hour, and no longer than the clock has run.
    assert!(report.last_latency_ns <= MAX_REPORTED_LATENCY_NS.min(now));
    assert_eq!(
        problems.latency_ns.is_some(),
        report.last_latency_ns != latency
    );
    // Times are not ahead of the clock.
    assert!(report.heartbeat_ns <= now);
    assert_eq!(problems.heartbeat_ns.is_some(), heartbeat > now);
    if let Some(b) = report.inference_begin_ns {
        assert!(b != 0 && b <= now);
    }
    assert_eq!(problems.inference_begin_ns.is_some(), begin > now);
    // What is not a problem is read as written.
    if problems.is_empty() {
        assert_eq!(report.deadline_misses, misses);
        assert_eq!(report.last_latency_ns, latency);
        assert_eq!(report.heartbeat_ns, heartbeat);
    }
    assert_eq!(problems.describe(&report).is_some(), !problems.is_empty());
});
