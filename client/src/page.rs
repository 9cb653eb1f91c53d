//! The app's view of its shared-memory page, at an address that never changes.
//!
//! Before the agent answers, or after it goes away, the page is private anonymous memory
//! holding the app's default sub-network ("standalone"). When the agent sends its memfd,
//! the memfd is mapped over the same address with `MAP_FIXED`, which replaces the old
//! mapping in one step. So `current_subnet()` is a single atomic load from a fixed
//! address whatever the connection state, and no lock or pointer swap sits on the
//! inference path.

use governor_proto::shm::{Reason, ShmPage, NO_SUBNET, SHM_LAYOUT_VERSION, SHM_MAGIC, SHM_SIZE};
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct Page {
    addr: NonNull<ShmPage>,
}

// SAFETY: the page holds only atomics, and the mapping lives as long as `Page`.
unsafe impl Send for Page {}
unsafe impl Sync for Page {}

fn size() -> NonZeroUsize {
    NonZeroUsize::new(SHM_SIZE).expect("page size is not zero")
}

impl Page {
    /// A standalone page telling the app to run `default_subnet`.
    pub(crate) fn standalone(default_subnet: u32) -> nix::Result<Self> {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let addr = unsafe {
            mmap_anonymous(
                None,
                size(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )?
        };
        let page = Self { addr: addr.cast() };
        init_standalone(page.get(), NO_SUBNET, default_subnet);
        Ok(page)
    }

    pub(crate) fn get(&self) -> &ShmPage {
        // SAFETY: `addr` is a live, page-aligned mapping of SHM_SIZE bytes for as long
        // as `self` lives; MAP_FIXED replacements keep it mapped.
        unsafe { ShmPage::from_ptr(self.addr.as_ptr() as *const u8) }
    }

    /// Replaces the page with the agent's memfd, after checking its header. What the
    /// app runs now is carried over so the agent sees it at once.
    pub(crate) fn install_agent_page(&self, memfd: impl AsFd) -> Result<(), String> {
        let flags = MapFlags::MAP_SHARED;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // Map it elsewhere first: a page we refuse must not replace the one in use.
        // SAFETY: a new shared mapping of the agent's memfd at an address of the kernel's
        // choosing; it aliases nothing of ours.
        let probe = unsafe { mmap(None, size(), prot, flags, &memfd, 0) }
            .map_err(|e| format!("cannot map the agent's shared memory: {e}"))?;
        // SAFETY: `probe` is a fresh mapping of SHM_SIZE bytes, page aligned.
        let probe_page = unsafe { ShmPage::from_ptr(probe.as_ptr() as *const u8) };
        let checked = probe_page.check().map_err(|e| e.to_string());
        if checked.is_ok() {
            copy_app_block(self.get(), probe_page);
        }
        // SAFETY: unmapping the probe mapping made above; nothing refers to it.
        let _ = unsafe { munmap(probe, SHM_SIZE) };
        checked?;
        // SAFETY: MAP_FIXED over our own page-aligned mapping of the same size: readers
        // see either the old or the new page, both valid `ShmPage`s.
        unsafe {
            mmap(
                Some(self.addr_usize()),
                size(),
                prot,
                flags | MapFlags::MAP_FIXED,
                &memfd,
                0,
            )
        }
        .map_err(|e| format!("cannot map the agent's shared memory in place: {e}"))?;
        Ok(())
    }

    /// Goes back to a standalone page running `default_subnet` (the agent went away).
    pub(crate) fn install_standalone(&self, default_subnet: u32) -> nix::Result<()> {
        let saved = ShmPage::zeroed();
        copy_app_block(self.get(), &saved);
        // SAFETY: MAP_FIXED over our own mapping, as in `install_agent_page`.
        unsafe {
            mmap_anonymous(
                Some(self.addr_usize()),
                size(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED,
            )?
        };
        init_standalone(self.get(), NO_SUBNET, default_subnet);
        copy_app_block(&saved, self.get());
        Ok(())
    }

    fn addr_usize(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.addr.as_ptr() as usize).expect("mapping address is not null")
    }
}

/// Carries what the app reported across a page swap, so its counters keep counting
/// and the agent sees at once what it runs. An increment racing with the swap may be
/// lost; the counters are statistics, not accounting.
fn copy_app_block(from: &ShmPage, to: &ShmPage) {
    let (from, to) = (&from.app, &to.app);
    let copy = |a: &AtomicU64, b: &AtomicU64| b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
    to.active_subnet.store(
        from.active_subnet.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    copy(&from.heartbeat_ns, &to.heartbeat_ns);
    copy(&from.deadline_misses, &to.deadline_misses);
    copy(&from.last_latency_ns, &to.last_latency_ns);
    copy(&from.inference_begin_ns, &to.inference_begin_ns);
    copy(&from.latency_sum_ns, &to.latency_sum_ns);
    copy(&from.inferences_completed, &to.inferences_completed);
}

fn init_standalone(page: &ShmPage, active: u32, default_subnet: u32) {
    page.header.magic.store(SHM_MAGIC, Ordering::Relaxed);
    page.header.size.store(SHM_SIZE as u32, Ordering::Relaxed);
    page.header.app_id.store(0, Ordering::Relaxed);
    page.agent.write_command(default_subnet, Reason::Standalone);
    page.app.active_subnet.store(active, Ordering::Relaxed);
    page.header
        .layout_version
        .store(SHM_LAYOUT_VERSION, Ordering::Release);
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing borrows it once `self` is dropped.
        let _ = unsafe { munmap(self.addr.cast(), SHM_SIZE) };
    }
}
