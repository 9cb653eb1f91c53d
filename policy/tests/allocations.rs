//! A control tick with a plan in force and no optimiser run allocates nothing but the
//! decision it returns (its two vectors): the per-tick path reuses buffers held in the
//! manager. Counted with a global allocator that counts the calls of the thread under test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dnngov_policy::{Config, Manager, Nanos, Watts};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_steady_state_tick_allocates_only_its_decision() {
    // Periodic re-plans off, so that no tick below runs the optimiser.
    let cfg = Config {
        reoptimise_every: Nanos(u64::MAX),
        ..Config::default()
    };
    let mut m = Manager::new(cfg);
    let apps = common::mixed_apps(2);
    let tick = |ms: u64, finished: bool| {
        let mut s = common::snapshot(ms, apps.clone());
        s.power = Some(Watts(6.0));
        if finished {
            for (i, a) in s.apps.iter_mut().enumerate() {
                if (ms + 30 * i as u64).is_multiple_of(100) {
                    let lat = a.library[0].latency_full.unwrap().as_millis_f64();
                    a.finished = vec![common::inference(ms, lat, 0)];
                }
            }
        }
        s
    };
    for ms in (0..=3000).step_by(10) {
        m.step(&tick(ms, true));
    }
    let snaps: Vec<_> = (1..=100).map(|k| tick(3000 + 10 * k, false)).collect();
    for s in &snaps {
        COUNT.with(|c| c.set(0));
        COUNTING.with(|on| on.set(true));
        let d = m.step(s);
        COUNTING.with(|on| on.set(false));
        assert!(!d.optimised);
        let n = COUNT.with(|c| c.get());
        assert!(n <= 2, "{n} allocations at {:?}", s.now);
    }
}
