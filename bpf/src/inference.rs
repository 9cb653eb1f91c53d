//! Every inference's begin and end, from uprobes on the client's marker
//! functions in the binary or shared library each app runs them from. Counters
//! are kept in the kernel; records go through one ring buffer per app.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    libbpf_sys, ErrorKind, Link, MapCore, MapFlags, MapHandle, MapType, RingBuffer,
    RingBufferBuilder, UprobeOpts,
};

use crate::error::Error;
use crate::infer_skel::types::{app_stats, dnngov_limits, infer_record};
use crate::infer_skel::{InferSkel, InferSkelBuilder};
use crate::owned::OwnedSkel;
use crate::snapshot::{AppInferences, InferenceCounters, InferenceRecord};
use crate::source::{Nanos, Source};

pub const MARKER_BEGIN: &str = "dnngov_marker_begin";
pub const MARKER_END: &str = "dnngov_marker_end";

/// Records kept between two drains; beyond this the oldest are discarded, so an
/// agent that stops draining cannot grow without bound.
const MAX_QUEUED_RECORDS: usize = 1 << 16;

/// Room for records kept after a drain. A queue that grew past this while the agent was
/// slow to drain (many apps leaving at once) gives the rest back, rather than holding up
/// to [`MAX_QUEUED_RECORDS`] records' worth of memory for the daemon's life.
const KEPT_QUEUE_CAPACITY: usize = 1 << 10;

/// Where an app's markers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppBinary {
    pub app_id: u32,
    /// The executable or shared library (e.g. `libdnngov_client.so`) holding the
    /// marker symbols.
    pub binary: PathBuf,
    /// Fire only in this process (its tgid); `None`: in every process mapping
    /// the file. Either way only markers carrying `app_id` from this pid (when
    /// given) are counted.
    pub pid: Option<u32>,
}

/// Uprobes are per file (and pid filter), not per app: apps sharing one library
/// share one pair of probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ProbeKey {
    dev: u64,
    ino: u64,
    pid: i32,
}

struct SharedProbe {
    _links: [Link; 2],
    users: usize,
}

struct AttachedApp {
    probe: ProbeKey,
    ring_map: MapHandle,
}

type RecordQueue = Arc<Mutex<VecDeque<InferenceRecord>>>;

pub(crate) struct Inferences {
    // One reader over every app's ring, so one fd wakes the agent for any app.
    // It, the links and the rings are declared before the skeleton so they are
    // dropped before the object they reference.
    reader: Option<RingBuffer<'static>>,
    apps: BTreeMap<u32, AttachedApp>,
    probes: HashMap<ProbeKey, SharedProbe>,
    records: RecordQueue,
    skel: OwnedSkel<InferSkel<'static>>,
}

impl Inferences {
    pub(crate) fn load() -> Result<Inferences, Error> {
        let skel = OwnedSkel::new(|storage| {
            InferSkelBuilder::default()
                .open(storage)
                .and_then(|open| open.load())
                .map_err(|e| Error::bpf("loading inference uprobes", e))
        })?;
        Ok(Inferences {
            reader: None,
            apps: BTreeMap::new(),
            probes: HashMap::new(),
            records: Arc::new(Mutex::new(VecDeque::new())),
            skel,
        })
    }

    pub(crate) fn program_fds(&self) -> Vec<BorrowedFd<'_>> {
        let progs = &self.skel.get().progs;
        vec![
            progs.dnngov_marker_begin.as_fd(),
            progs.dnngov_marker_end.as_fd(),
        ]
    }

    pub(crate) fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.apps.keys().copied()
    }

    pub(crate) fn attach(&mut self, app: &AppBinary) -> Result<(), Error> {
        if self.apps.contains_key(&app.app_id) {
            return Err(Error::AppAttached(app.app_id));
        }
        let probe = self.ensure_probe(&app.binary, app.pid)?;
        let registered = self.register(app, probe).and_then(|attached| {
            self.apps.insert(app.app_id, attached);
            self.rebuild_reader()
        });
        if let Err(e) = registered {
            self.apps.remove(&app.app_id);
            self.forget(app.app_id);
            self.release_probe(probe);
            if let Err(again) = self.rebuild_reader() {
                log::warn!("inference records unreadable until the next attach: {again}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// The reader maps each ring once at build time, so it is rebuilt whenever
    /// the set of apps changes. The consumer position lives in the ring itself:
    /// nothing is lost or read twice across a rebuild.
    fn rebuild_reader(&mut self) -> Result<(), Error> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.consume();
        }
        if self.apps.is_empty() {
            return Ok(());
        }
        let mut builder = RingBufferBuilder::new();
        for (app_id, app) in &self.apps {
            let queue = Arc::clone(&self.records);
            builder
                .add(&app.ring_map, move |bytes: &[u8]| {
                    if let Some(record) = parse_record(bytes) {
                        push_bounded(&queue, record);
                    }
                    0
                })
                .map_err(|e| Error::bpf(format!("reading ring buffer of app {app_id}"), e))?;
        }
        let reader = builder
            .build()
            .map_err(|e| Error::bpf("reading inference ring buffers", e))?;
        self.reader = Some(reader);
        Ok(())
    }

    fn ensure_probe(&mut self, binary: &Path, pid: Option<u32>) -> Result<ProbeKey, Error> {
        let meta = std::fs::File::open(binary)
            .and_then(|f| f.metadata())
            .map_err(|source| Error::Binary {
                binary: binary.to_path_buf(),
                source,
            })?;
        let key = ProbeKey {
            dev: meta.dev(),
            ino: meta.ino(),
            pid: pid.map_or(-1, |p| p as i32),
        };
        if let Some(shared) = self.probes.get_mut(&key) {
            shared.users += 1;
            return Ok(key);
        }
        let progs = &self.skel.get().progs;
        let begin = attach_marker(&progs.dnngov_marker_begin, binary, key.pid, MARKER_BEGIN)?;
        let end = attach_marker(&progs.dnngov_marker_end, binary, key.pid, MARKER_END)?;
        log::info!(
            "inference markers attached in {} (pid filter {})",
            binary.display(),
            key.pid
        );
        self.probes.insert(
            key,
            SharedProbe {
                _links: [begin, end],
                users: 1,
            },
        );
        Ok(key)
    }

    fn release_probe(&mut self, key: ProbeKey) {
        if let Some(shared) = self.probes.get_mut(&key) {
            shared.users -= 1;
            if shared.users == 0 {
                self.probes.remove(&key);
            }
        }
    }

    fn register(&self, app: &AppBinary, probe: ProbeKey) -> Result<AttachedApp, Error> {
        let maps = &self.skel.get().maps;
        let id = app.app_id.to_ne_bytes();
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let ring_map = MapHandle::create(
            MapType::RingBuf,
            Some(format!("dnngov_r{}", app.app_id % 1_000_000)),
            0,
            0,
            dnngov_limits::DNNGOV_RING_BYTES.0,
            &opts,
        )
        .map_err(|e| Error::bpf(format!("creating ring buffer of app {}", app.app_id), e))?;
        let ring_fd = ring_map.as_fd().as_raw_fd() as u32;
        maps.app_rings
            .update(&id, &ring_fd.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("installing ring buffer of app {}", app.app_id), e))?;
        let zero = app_stats::default();
        maps.app_stats
            .update(&id, pod_bytes(&zero), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("resetting counters of app {}", app.app_id), e))?;

        // Last: the begin probe ignores an app until its owner entry exists, so
        // nothing is counted before the ring and counters are in place.
        let owner = app.pid.unwrap_or(0);
        maps.app_owner
            .update(&id, &owner.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| Error::bpf(format!("registering app {}", app.app_id), e))?;
        Ok(AttachedApp { probe, ring_map })
    }

    pub(crate) fn detach(&mut self, app_id: u32) -> bool {
        let Some(app) = self.apps.remove(&app_id) else {
            return false;
        };
        self.forget(app_id);
        // Rebuilding first drains the old reader, so the app's last records
        // are kept.
        if let Err(e) = self.rebuild_reader() {
            log::warn!("inference records unreadable until the next attach: {e}");
        }
        drop(app.ring_map);
        self.release_probe(app.probe);
        true
    }

    /// Removes an app's kernel entries, owner first so its probes stop
    /// counting before its counters and ring go.
    fn forget(&self, app_id: u32) {
        let maps = &self.skel.get().maps;
        let id = app_id.to_ne_bytes();
        for (name, map) in [
            ("owner", &maps.app_owner as &dyn MapCore),
            ("counters", &maps.app_stats),
            ("ring", &maps.app_rings),
        ] {
            if let Err(e) = map.delete(&id) {
                log::debug!("app {app_id}: removing {name}: {e}");
            }
        }
    }

    pub(crate) fn counters(&self, app_id: u32) -> Option<AppInferences> {
        let raw = self
            .skel
            .get()
            .maps
            .app_stats
            .lookup(&app_id.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()?;
        let stats = parse_pod::<app_stats>(&raw)?;
        Some(AppInferences {
            app_id,
            counters: InferenceCounters {
                count: stats.count,
                misses: stats.misses,
                latency_sum: Nanos(stats.latency_sum_ns),
            },
            dropped_records: stats.dropped,
            source: Source::Bpf,
        })
    }

    /// Moves every finished inference the rings hold into `out`, oldest first
    /// per app.
    pub(crate) fn drain(&mut self, out: &mut Vec<InferenceRecord>) {
        if let Some(reader) = &self.reader {
            if let Err(e) = reader.consume() {
                log::warn!("reading inference ring buffers: {e}");
            }
        }
        take_records(&self.records, out);
    }

    /// Blocks up to `timeout` until some app finished an inference; true if any
    /// record is waiting for `drain`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> bool {
        match &self.reader {
            Some(reader) => {
                if let Err(e) = reader.poll(timeout) {
                    log::warn!("waiting on inference ring buffers: {e}");
                }
            }
            None => std::thread::sleep(timeout),
        }
        self.records.lock().is_ok_and(|q| !q.is_empty())
    }

    /// Readable when a record arrives; for the agent's own event loop. Changes
    /// when apps attach or detach.
    pub(crate) fn wait_fd(&self) -> Option<RawFd> {
        self.reader.as_ref().map(|r| r.epoll_fd())
    }
}

fn attach_marker(
    prog: &libbpf_rs::ProgramMut<'_>,
    binary: &Path,
    pid: i32,
    symbol: &'static str,
) -> Result<Link, Error> {
    prog.attach_uprobe_with_opts(
        pid,
        binary,
        0,
        UprobeOpts {
            func_name: Some(symbol.to_string()),
            ..Default::default()
        },
    )
    .map_err(|e| {
        // The file opened, so "not found" from libbpf is its symbol lookup.
        if e.kind() == ErrorKind::NotFound {
            Error::MarkerNotFound {
                binary: binary.to_path_buf(),
                symbol,
            }
        } else {
            Error::bpf(format!("{}: attaching to `{symbol}`", binary.display()), e)
        }
    })
}

/// Moves every queued record into `out`, and gives back the room of a queue that grew
/// beyond [`KEPT_QUEUE_CAPACITY`].
fn take_records(queue: &RecordQueue, out: &mut Vec<InferenceRecord>) {
    if let Ok(mut q) = queue.lock() {
        out.extend(q.drain(..));
        if q.capacity() > KEPT_QUEUE_CAPACITY {
            q.shrink_to(KEPT_QUEUE_CAPACITY);
        }
    }
}

fn push_bounded(queue: &RecordQueue, record: InferenceRecord) {
    if let Ok(mut q) = queue.lock() {
        if q.len() >= MAX_QUEUED_RECORDS {
            q.pop_front();
        }
        q.push_back(record);
    }
}

fn parse_record(bytes: &[u8]) -> Option<InferenceRecord> {
    let r = parse_pod::<infer_record>(bytes)?;
    Some(InferenceRecord {
        pid: r.pid,
        app_id: r.app_id,
        seq: r.seq,
        begin: Nanos(r.begin_ns),
        end: Nanos(r.end_ns),
        deadline: (r.deadline_ns != 0).then_some(Nanos(r.deadline_ns)),
        subnet: r.subnet,
    })
}

/// Plain-old-data records generated from `intf.h`: no padding holes read as
/// uninitialised, no invalid bit patterns.
trait Pod: Copy + Default {}
impl Pod for infer_record {}
impl Pod for app_stats {}

fn parse_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `T` is plain old data; the kernel's buffer carries
    // no alignment promise, hence read_unaligned.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn pod_bytes<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: `T` is plain old data with explicit padding fields, so every byte
    // is initialised; the slice borrows `value`.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_without_deadline_has_none() {
        let raw = infer_record {
            pid: 3,
            app_id: 9,
            seq: 4,
            begin_ns: 100,
            end_ns: 250,
            deadline_ns: 0,
            subnet: 2,
            _pad: 0,
        };
        let r = parse_record(pod_bytes(&raw)).unwrap();
        assert_eq!(r.latency(), Nanos(150));
        assert_eq!(r.deadline, None);
        assert_eq!((r.pid, r.app_id, r.seq, r.subnet), (3, 9, 4, 2));
    }

    #[test]
    fn truncated_record_is_rejected() {
        let raw = infer_record::default();
        assert!(parse_record(&pod_bytes(&raw)[..8]).is_none());
    }

    /// A record of app 1 with sequence number `seq`.
    fn rec(seq: u64) -> InferenceRecord {
        InferenceRecord {
            pid: 1,
            app_id: 1,
            seq,
            begin: Nanos(0),
            end: Nanos(1),
            deadline: None,
            subnet: 0,
        }
    }

    #[test]
    fn queue_drops_oldest_beyond_its_bound() {
        let q: RecordQueue = Arc::default();
        for seq in 0..(MAX_QUEUED_RECORDS as u64 + 2) {
            push_bounded(&q, rec(seq));
        }
        let q = q.lock().unwrap();
        assert_eq!(q.len(), MAX_QUEUED_RECORDS);
        assert_eq!(q.front().unwrap().seq, 2);
    }

    #[test]
    fn drained_queue_gives_back_the_room_of_a_backlog() {
        let q: RecordQueue = Arc::default();
        // A backlog of 40,000 records (as when the agent is slow to drain), drained in
        // order, then the room it took is returned.
        for seq in 0..40_000 {
            push_bounded(&q, rec(seq));
        }
        let mut out = Vec::new();
        take_records(&q, &mut out);
        assert_eq!(out.len(), 40_000);
        assert!(out.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        let kept = q.lock().unwrap().capacity();
        assert!(
            kept <= KEPT_QUEUE_CAPACITY,
            "the drained queue keeps room for {kept} records"
        );
        // It still takes records afterwards.
        push_bounded(&q, rec(7));
        out.clear();
        take_records(&q, &mut out);
        assert_eq!(out.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![7]);
    }
}
