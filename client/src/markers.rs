//! Inference markers: exported, never-inlined `extern "C"` functions that eBPF uprobes
//! attach to (by symbol name, in the binary or shared library that holds them).
//!
//! Their bodies do nothing the optimiser may drop: an empty `asm!` block without
//! `pure` counts as a side effect, so a call to a marker is never elided even when the
//! caller is in the same crate and can see the body. The arguments go through
//! `black_box` so they are materialised in the argument registers the probe reads.

use std::hint::black_box;

/// Marks the start of inference `seq` of app `app_id`, running sub-network `subnet`,
/// with a deadline of `deadline_ns` nanoseconds from now (0: none).
#[no_mangle]
#[inline(never)]
pub extern "C" fn dnngov_marker_begin(app_id: u32, seq: u64, subnet: u32, deadline_ns: u64) {
    black_box((app_id, seq, subnet, deadline_ns));
    // SAFETY: an empty instruction sequence; it reads and writes nothing.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}

/// Marks the end of inference `seq` of app `app_id`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn dnngov_marker_end(app_id: u32, seq: u64) {
    black_box((app_id, seq));
    // SAFETY: as above.
    unsafe { std::arch::asm!("", options(nostack, preserves_flags)) };
}
