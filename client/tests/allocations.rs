//! The inference path allocates nothing, with the per-inference trace on: `begin`, `end`
//! (which formats and writes the trace line) and `current_subnet` run without a call to
//! the allocator. Counted with a global allocator that counts the calls of the thread
//! under test (the session's background thread may allocate as it likes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use dnngov_client::{AppSpec, Device, Options, Session, Subnet, Target};

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
fn a_traced_inference_allocates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = AppSpec {
        name: "counted".into(),
        devices: vec![Device::Cpu],
        subnets: vec![
            Subnet {
                id: 0,
                name: "small".into(),
                accuracy_pct: 70.0,
                latency_ms: None,
                relative_cost: None,
            },
            Subnet {
                id: 9,
                name: "large".into(),
                accuracy_pct: 75.5,
                latency_ms: None,
                relative_cost: None,
            },
        ],
        target: Target {
            deadline_ms: 10.0,
            period_ms: None,
            accuracy_floor_pct: None,
            priority: 0,
        },
        default_subnet: None,
    };
    let options = Options {
        socket_path: dir.path().join("no-agent.sock"),
        trace_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let session = Session::register(spec, options).unwrap();
    let path = session.trace_path().expect("a trace").to_path_buf();

    COUNTING.with(|on| on.set(true));
    for i in 0..100u32 {
        let subnet = if i % 2 == 0 {
            session.current_subnet()
        } else {
            0
        };
        session.ack_subnet(subnet);
        session.begin(Duration::from_millis(10));
        std::hint::black_box(session.end());
    }
    COUNTING.with(|on| on.set(false));

    assert_eq!(
        COUNT.with(Cell::get),
        0,
        "allocations on the inference path"
    );
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert_eq!(lines, 101, "the header and every inference were written");
}
