//! The shared-memory page between the agent and one app.
//!
//! One 4 KiB page, `#[repr(C)]`, made only of atomics so that two processes may touch it
//! at once without undefined behaviour. Three cache lines are used, each written by one
//! side only, so the agent's writes never bounce the line the app updates on every
//! inference:
//!
//! | bytes   | block        | writer |
//! |---------|--------------|--------|
//! | 0..64   | [`Header`]   | agent, once, before the fd is sent |
//! | 64..128 | [`AgentBlock`] | agent: the sub-network it asks for |
//! | 128..192| [`AppBlock`] | app: what it runs, counters, heartbeat |
//!
//! The layout version is written last with `Release`; a reader loads it with `Acquire`
//! first and refuses a page whose version or magic it does not know, so it can never act
//! on a half-initialised page. `docs/protocol.md` documents every offset; a test checks
//! the document against [`layout_table`].

use std::mem::{offset_of, size_of};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Size of the page, and of the memfd the agent creates.
pub const SHM_SIZE: usize = 4096;
/// "DNNGOVSH" read as a little-endian u64.
pub const SHM_MAGIC: u64 = u64::from_le_bytes(*b"DNNGOVSH");
/// Version of this layout; bumped on any change of offsets or meanings.
pub const SHM_LAYOUT_VERSION: u32 = 1;
/// A sub-network id that means "none yet" in [`AppBlock::active_subnet`].
pub const NO_SUBNET: u32 = u32::MAX;

/// Written once by the agent before the app sees the page.
#[repr(C, align(64))]
pub struct Header {
    pub magic: AtomicU64,
    /// Written last (`Release`): a reader that sees the right version sees the rest.
    pub layout_version: AtomicU32,
    pub size: AtomicU32,
    pub app_id: AtomicU32,
    _reserved: [u8; 44],
}

/// Written by the agent only: the sub-network it asks the app to run.
#[repr(C, align(64))]
pub struct AgentBlock {
    /// Even when the command is stable, odd while the agent rewrites it (a sequence lock).
    pub generation: AtomicU64,
    pub requested_subnet: AtomicU32,
    /// A [`Reason`] as `u32`.
    pub reason: AtomicU32,
    _reserved: [u8; 48],
}

/// Written by the app only: what it runs and how it is doing.
#[repr(C, align(64))]
pub struct AppBlock {
    /// The sub-network the app runs now: its acknowledgement of a request.
    pub active_subnet: AtomicU32,
    _pad: AtomicU32,
    /// `CLOCK_MONOTONIC` time of the app's last sign of life, in ns.
    pub heartbeat_ns: AtomicU64,
    pub inferences_completed: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub last_latency_ns: AtomicU64,
    /// `CLOCK_MONOTONIC` start of the inference in flight, 0 when none is.
    pub inference_begin_ns: AtomicU64,
    /// Sum of the latencies of all completed inferences, in ns (with
    /// `inferences_completed`, the mean latency over any interval).
    pub latency_sum_ns: AtomicU64,
    _reserved: [u8; 8],
}

/// The whole page.
#[repr(C, align(64))]
pub struct ShmPage {
    pub header: Header,
    pub agent: AgentBlock,
    pub app: AppBlock,
    _reserved: [u8; SHM_SIZE - 3 * 64],
}

const _: () = {
    assert!(size_of::<ShmPage>() == SHM_SIZE);
    assert!(size_of::<Header>() == 64);
    assert!(size_of::<AgentBlock>() == 64);
    assert!(size_of::<AppBlock>() == 64);
    assert!(offset_of!(ShmPage, header) == 0);
    assert!(offset_of!(ShmPage, agent) == 64);
    assert!(offset_of!(ShmPage, app) == 128);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, layout_version) == 8);
    assert!(offset_of!(Header, size) == 12);
    assert!(offset_of!(Header, app_id) == 16);
    assert!(offset_of!(AgentBlock, generation) == 0);
    assert!(offset_of!(AgentBlock, requested_subnet) == 8);
    assert!(offset_of!(AgentBlock, reason) == 12);
    assert!(offset_of!(AppBlock, active_subnet) == 0);
    assert!(offset_of!(AppBlock, heartbeat_ns) == 8);
    assert!(offset_of!(AppBlock, inferences_completed) == 16);
    assert!(offset_of!(AppBlock, deadline_misses) == 24);
    assert!(offset_of!(AppBlock, last_latency_ns) == 32);
    assert!(offset_of!(AppBlock, inference_begin_ns) == 40);
    assert!(offset_of!(AppBlock, latency_sum_ns) == 48);
};

/// Why the agent asked for a sub-network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    /// The sub-network given at registration.
    Initial = 0,
    /// Latency was at risk of missing the deadline.
    Deadline = 1,
    /// There was slack: a more accurate sub-network fits.
    Slack = 2,
    /// The joint optimiser found a cheaper configuration meeting every target.
    Energy = 3,
    /// Another app needs a share of the same device.
    Contention = 4,
    /// A thermal or power cap, or fewer online cores.
    HardwareLimit = 5,
    /// An operator's override through `dnngovctl`.
    Operator = 6,
    /// No agent: the app runs its default sub-network.
    Standalone = 7,
}

impl Reason {
    pub fn from_u32(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Initial,
            1 => Self::Deadline,
            2 => Self::Slack,
            3 => Self::Energy,
            4 => Self::Contention,
            5 => Self::HardwareLimit,
            6 => Self::Operator,
            7 => Self::Standalone,
            _ => return None,
        })
    }
}

/// A consistent copy of the agent's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub generation: u64,
    pub subnet: u32,
    pub reason: u32,
}

/// A page that does not hold a layout this code understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "shared memory has magic {found:#018x}, expected {SHM_MAGIC:#018x}: not a dnngov page"
    )]
    BadMagic { found: u64 },
    #[error("shared memory has layout version {found}, this library understands version {SHM_LAYOUT_VERSION}")]
    BadVersion { found: u32 },
    #[error("shared memory says it is {found} bytes, expected {SHM_SIZE}")]
    BadSize { found: u32 },
}

impl ShmPage {
    /// An all-zero page (all fields are atomics, for which zero is a valid value).
    pub fn zeroed() -> Self {
        // SAFETY: every field is an atomic integer or a byte array; all-zero bytes are a
        // valid value of each.
        unsafe { std::mem::zeroed() }
    }

    /// Views `ptr` as a page.
    ///
    /// # Safety
    /// `ptr` must be aligned to 64 bytes and point to at least [`SHM_SIZE`] bytes that
    /// stay mapped for `'a`. Other processes may write the page concurrently: that is
    /// why every field is atomic.
    pub unsafe fn from_ptr<'a>(ptr: *const u8) -> &'a ShmPage {
        &*(ptr as *const ShmPage)
    }

    /// Fills a fresh page for `app_id`; the agent calls this before sending the fd.
    pub fn initialise(&self, app_id: u32, initial_subnet: u32) {
        self.header.magic.store(SHM_MAGIC, Ordering::Relaxed);
        self.header.size.store(SHM_SIZE as u32, Ordering::Relaxed);
        self.header.app_id.store(app_id, Ordering::Relaxed);
        self.agent.generation.store(0, Ordering::Relaxed);
        self.agent
            .requested_subnet
            .store(initial_subnet, Ordering::Relaxed);
        self.agent
            .reason
            .store(Reason::Initial as u32, Ordering::Relaxed);
        self.app.active_subnet.store(NO_SUBNET, Ordering::Relaxed);
        // Release: whoever loads this version with Acquire sees every store above.
        self.header
            .layout_version
            .store(SHM_LAYOUT_VERSION, Ordering::Release);
    }

    /// Checks the header; call once after mapping, before trusting anything else.
    pub fn check(&self) -> Result<(), LayoutError> {
        // Acquire pairs with the Release in `initialise`.
        let version = self.header.layout_version.load(Ordering::Acquire);
        let magic = self.header.magic.load(Ordering::Relaxed);
        if magic != SHM_MAGIC {
            return Err(LayoutError::BadMagic { found: magic });
        }
        if version != SHM_LAYOUT_VERSION {
            return Err(LayoutError::BadVersion { found: version });
        }
        let size = self.header.size.load(Ordering::Relaxed);
        if size as usize != SHM_SIZE {
            return Err(LayoutError::BadSize { found: size });
        }
        Ok(())
    }
}

impl AgentBlock {
    /// Asks the app to run `subnet`. Single writer: only the agent calls this.
    pub fn write_command(&self, subnet: u32, reason: Reason) {
        let generation = self.generation.load(Ordering::Relaxed);
        // Odd generation: readers retry until we are done.
        self.generation
            .store(generation.wrapping_add(1), Ordering::Relaxed);
        // Release fence: the odd generation is visible before any field changes.
        fence(Ordering::Release);
        self.reason.store(reason as u32, Ordering::Relaxed);
        // Release on the subnet as well, so `requested_subnet` alone (one load, the fast
        // path of the client) is a valid way to read the command.
        self.requested_subnet.store(subnet, Ordering::Release);
        // Release: the fields are visible before the even generation that publishes them.
        self.generation
            .store(generation.wrapping_add(2), Ordering::Release);
    }

    /// The sub-network asked for: one atomic load.
    #[inline]
    pub fn requested_subnet(&self) -> u32 {
        self.requested_subnet.load(Ordering::Acquire)
    }

    /// A consistent (generation, sub-network, reason) triple.
    pub fn read_command(&self) -> Command {
        loop {
            // Acquire pairs with the final Release store of `write_command`.
            let before = self.generation.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let subnet = self.requested_subnet.load(Ordering::Relaxed);
            let reason = self.reason.load(Ordering::Relaxed);
            // Acquire fence: the field loads above happen before the re-check below.
            fence(Ordering::Acquire);
            let after = self.generation.load(Ordering::Relaxed);
            if before == after {
                return Command {
                    generation: before,
                    subnet,
                    reason,
                };
            }
        }
    }
}

/// Every documented field: (name, offset in the page, size in bytes). `docs/protocol.md`
/// must list exactly these.
pub fn layout_table() -> Vec<(&'static str, usize, usize)> {
    const H: usize = offset_of!(ShmPage, header);
    const A: usize = offset_of!(ShmPage, agent);
    const P: usize = offset_of!(ShmPage, app);
    vec![
        ("header.magic", H + offset_of!(Header, magic), 8),
        (
            "header.layout_version",
            H + offset_of!(Header, layout_version),
            4,
        ),
        ("header.size", H + offset_of!(Header, size), 4),
        ("header.app_id", H + offset_of!(Header, app_id), 4),
        (
            "agent.generation",
            A + offset_of!(AgentBlock, generation),
            8,
        ),
        (
            "agent.requested_subnet",
            A + offset_of!(AgentBlock, requested_subnet),
            4,
        ),
        ("agent.reason", A + offset_of!(AgentBlock, reason), 4),
        (
            "app.active_subnet",
            P + offset_of!(AppBlock, active_subnet),
            4,
        ),
        (
            "app.heartbeat_ns",
            P + offset_of!(AppBlock, heartbeat_ns),
            8,
        ),
        (
            "app.inferences_completed",
            P + offset_of!(AppBlock, inferences_completed),
            8,
        ),
        (
            "app.deadline_misses",
            P + offset_of!(AppBlock, deadline_misses),
            8,
        ),
        (
            "app.last_latency_ns",
            P + offset_of!(AppBlock, last_latency_ns),
            8,
        ),
        (
            "app.inference_begin_ns",
            P + offset_of!(AppBlock, inference_begin_ns),
            8,
        ),
        (
            "app.latency_sum_ns",
            P + offset_of!(AppBlock, latency_sum_ns),
            8,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn initialised_page_passes_check_and_zero_page_does_not() {
        let page = ShmPage::zeroed();
        assert_eq!(page.check(), Err(LayoutError::BadMagic { found: 0 }));
        page.initialise(7, 3);
        assert_eq!(page.check(), Ok(()));
        assert_eq!(page.header.app_id.load(Ordering::Relaxed), 7);
        assert_eq!(page.agent.requested_subnet(), 3);
        assert_eq!(page.app.active_subnet.load(Ordering::Relaxed), NO_SUBNET);
    }

    #[test]
    fn check_rejects_other_layout_version() {
        let page = ShmPage::zeroed();
        page.initialise(1, 0);
        page.header.layout_version.store(2, Ordering::Release);
        assert_eq!(page.check(), Err(LayoutError::BadVersion { found: 2 }));
    }

    #[test]
    fn write_command_bumps_generation_by_two() {
        let page = ShmPage::zeroed();
        page.initialise(1, 0);
        page.agent.write_command(4, Reason::Deadline);
        let command = page.agent.read_command();
        assert_eq!(command.generation, 2);
        assert_eq!(command.subnet, 4);
        assert_eq!(command.reason, Reason::Deadline as u32);
    }

    #[test]
    fn reader_never_sees_a_torn_command() {
        // The writer always stores reason == subnet % 8; a torn read would break that.
        let page = Arc::new(ShmPage::zeroed());
        page.initialise(1, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (page, stop) = (page.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    let reason = Reason::from_u32(n % 8).unwrap();
                    page.agent.write_command(n, reason);
                }
            })
        };
        for _ in 0..200_000 {
            let command = page.agent.read_command();
            assert_eq!(command.reason, command.subnet % 8);
            assert_eq!(command.generation % 2, 0);
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn reason_round_trips_through_u32() {
        for value in 0..8 {
            assert_eq!(Reason::from_u32(value).unwrap() as u32, value);
        }
        assert_eq!(Reason::from_u32(8), None);
    }
}
