//! The app registry: the socket apps register on, one shared page per app, and the
//! bookkeeping of who is registered.
//!
//! One thread owns the listening socket and every connection and polls them together
//! with one pidfd per registered process. Everything an app sends is untrusted: each
//! packet is bounded, decoded and validated by `governor-proto`, and answered with a
//! clear error that changes nothing; a connection that misbehaves at the socket level
//! (never reads its replies) is closed. No app can stop the registry or another app.
//!
//! Other threads learn about apps from [`RegistryEvent`]s and write commands straight
//! into an app's shared page through its [`AppHandle`] (atomics, no thread hop).

use crate::socket::bind_seqpacket;
use anyhow::{bail, Context, Result};
use crossbeam_channel::{Receiver, Sender};
use governor_proto::shm::{Reason, ShmPage, NO_SUBNET, SHM_SIZE};
use governor_proto::validate::ProtoError;
use governor_proto::{
    decode_request, encode, Device, ErrorCode, RegisterRequest, Reply, Request, Subnet, Target,
    DEFAULT_SOCKET_PATH, MAX_APPS, MAX_PACKET_BYTES, PROTOCOL_VERSION,
};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{
    accept4, getsockopt, recv, sendmsg, sockopt, ControlMessage, MsgFlags, SockFlag,
    UnixCredentials,
};
use nix::unistd::ftruncate;
use std::collections::BTreeMap;
use std::io::{IoSlice, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// Connections that have not registered yet are bounded too, so a flood of idle
/// connections cannot exhaust the agent's descriptors.
const MAX_CONNECTIONS: usize = 4 * MAX_APPS;

/// Where and how the registry listens.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub socket_path: PathBuf,
    /// Group given the socket (mode 0660) when it exists on this machine.
    pub group: Option<String>,
    pub max_apps: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            group: Some("dnngov".into()),
            max_apps: MAX_APPS,
        }
    }
}

/// What the registry tells the rest of the agent.
#[derive(Debug, Clone)]
pub enum RegistryEvent {
    Joined(Arc<AppHandle>),
    TargetChanged {
        app_id: u32,
        target: Target,
    },
    Left {
        app_id: u32,
        name: String,
        why: LeaveReason,
    },
}

/// How the registry noticed an app was gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The app closed its connection.
    HungUp,
    /// Its process exited (seen on its pidfd).
    Exited,
    /// The registry closed the connection (the app did not read its replies).
    Dropped,
}

/// A registered app, shared with the threads that govern it.
#[derive(Debug)]
pub struct AppHandle {
    pub app_id: u32,
    pub pid: i32,
    pub uid: u32,
    pub name: String,
    pub devices: Vec<Device>,
    /// Ordered from least to most accurate, as the app declared it.
    pub subnets: Vec<Subnet>,
    pub default_subnet: u32,
    pub joined: Instant,
    target: Mutex<Target>,
    /// Set by an operator (`dnngovctl set-target`); wins over the app's own target
    /// until cleared.
    operator_target: Mutex<Option<Target>>,
    page: SharedPage,
}

/// What an app reported through its page, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppReport {
    /// `None` until the app acknowledges a sub-network.
    pub active_subnet: Option<u32>,
    pub requested_subnet: u32,
    pub heartbeat_ns: u64,
    pub inferences_completed: u64,
    pub deadline_misses: u64,
    pub last_latency_ns: u64,
    /// Sum of all completed inferences' latencies.
    pub latency_sum_ns: u64,
    /// Start of the inference in flight, if one is.
    pub inference_begin_ns: Option<u64>,
}

impl AppHandle {
    /// The app's shared page (the agent writes only its `agent` block).
    pub fn page(&self) -> &ShmPage {
        self.page.get()
    }

    /// Asks the app to run `subnet`, which must be in its library.
    pub fn request_subnet(&self, subnet: u32, reason: Reason) -> Result<()> {
        if !self.subnets.iter().any(|s| s.id == subnet) {
            bail!(
                "app {} ({}) has no sub-network {subnet}; its library has {:?}",
                self.app_id,
                self.name,
                self.subnets.iter().map(|s| s.id).collect::<Vec<_>>()
            );
        }
        self.page().agent.write_command(subnet, reason);
        Ok(())
    }

    /// The target the agent governs by: the operator's override, else the app's own.
    pub fn target(&self) -> Target {
        lock(&self.operator_target)
            .clone()
            .unwrap_or_else(|| self.app_target())
    }

    /// The target the app asked for, whatever an operator says.
    pub fn app_target(&self) -> Target {
        lock(&self.target).clone()
    }

    /// Overrides the app's target (`None` clears the override).
    pub fn set_operator_target(&self, target: Option<Target>) {
        *lock(&self.operator_target) = target;
    }

    pub fn has_operator_target(&self) -> bool {
        lock(&self.operator_target).is_some()
    }

    pub fn report(&self) -> AppReport {
        let app = &self.page().app;
        // Acquire pairs with the client's Release increment: the fields it wrote before
        // counting the inference are visible.
        let inferences_completed = app.inferences_completed.load(Ordering::Acquire);
        let active = app.active_subnet.load(Ordering::Acquire);
        let begin = app.inference_begin_ns.load(Ordering::Relaxed);
        AppReport {
            active_subnet: (active != NO_SUBNET).then_some(active),
            requested_subnet: self.page().agent.requested_subnet(),
            heartbeat_ns: app.heartbeat_ns.load(Ordering::Relaxed),
            inferences_completed,
            deadline_misses: app.deadline_misses.load(Ordering::Relaxed),
            last_latency_ns: app.last_latency_ns.load(Ordering::Relaxed),
            latency_sum_ns: app.latency_sum_ns.load(Ordering::Relaxed),
            inference_begin_ns: (begin != 0).then_some(begin),
        }
    }
}

/// The agent's mapping of one app's memfd.
#[derive(Debug)]
struct SharedPage {
    addr: NonNull<u8>,
}

// SAFETY: the page holds only atomics; the mapping lives as long as this value.
unsafe impl Send for SharedPage {}
unsafe impl Sync for SharedPage {}

impl SharedPage {
    fn get(&self) -> &ShmPage {
        // SAFETY: a live shared mapping of SHM_SIZE bytes, page aligned.
        unsafe { ShmPage::from_ptr(self.addr.as_ptr()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; nothing can borrow it after the handle is gone.
        let _ = unsafe { munmap(self.addr.cast(), SHM_SIZE) };
    }
}

/// Creates an app's page: a memfd sized to one page and sealed so neither side can
/// grow or shrink it (a shrink would make the other side fault), initialised, mapped.
fn create_page(app_id: u32, initial_subnet: u32) -> Result<(OwnedFd, SharedPage)> {
    let name = c"dnngov-app";
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .context("memfd_create")?;
    ftruncate(&fd, SHM_SIZE as i64).context("sizing the memfd")?;
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL,
        ),
    )
    .context("sealing the memfd")?;
    let size = NonZeroUsize::new(SHM_SIZE).expect("page size is not zero");
    // SAFETY: a new shared mapping of a memfd we just made.
    let addr = unsafe {
        mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &fd,
            0,
        )
    }
    .context("mapping the memfd")?;
    let page = SharedPage { addr: addr.cast() };
    page.get().initialise(app_id, initial_subnet);
    Ok((fd, page))
}

/// A running registry. Dropping it stops the thread, closes every connection and
/// removes the socket file.
pub struct Registry {
    events: Receiver<RegistryEvent>,
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
    waker: UnixStream,
    thread: Option<JoinHandle<()>>,
    socket_path: PathBuf,
}

impl Registry {
    /// Binds the socket and starts the registry thread.
    pub fn start(config: RegistryConfig) -> Result<Self> {
        let listener = bind_seqpacket(&config.socket_path, config.group.as_deref())?;
        let (events_tx, events) = crossbeam_channel::unbounded();
        let apps = Arc::new(Mutex::new(BTreeMap::new()));
        let (waker, wakee) = UnixStream::pair().context("creating the registry's waker")?;
        let mut state = State {
            listener,
            wakee,
            connections: Vec::new(),
            apps: apps.clone(),
            events: events_tx,
            max_apps: config.max_apps,
            next_app_id: 1,
            buffer: vec![0u8; MAX_PACKET_BYTES + 1],
        };
        let thread = std::thread::Builder::new()
            .name("registry".into())
            .spawn(move || state.run())
            .context("starting the registry thread")?;
        log::info!("listening for apps on {}", config.socket_path.display());
        Ok(Self {
            events,
            apps,
            waker,
            thread: Some(thread),
            socket_path: config.socket_path,
        })
    }

    /// Joins, target changes and departures, in the order they happened.
    pub fn events(&self) -> &Receiver<RegistryEvent> {
        &self.events
    }

    /// The apps registered now, by id.
    pub fn apps(&self) -> Vec<Arc<AppHandle>> {
        self.table().apps()
    }

    pub fn app(&self, app_id: u32) -> Option<Arc<AppHandle>> {
        self.table().app(app_id)
    }

    /// A view of the registered apps that other threads can keep.
    pub fn table(&self) -> AppTable {
        AppTable {
            apps: self.apps.clone(),
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.waker.write_all(&[1]);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// The registered apps, readable from any thread.
#[derive(Clone)]
pub struct AppTable {
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
}

impl AppTable {
    pub fn apps(&self) -> Vec<Arc<AppHandle>> {
        lock(&self.apps).values().cloned().collect()
    }

    pub fn app(&self, app_id: u32) -> Option<Arc<AppHandle>> {
        lock(&self.apps).get(&app_id).cloned()
    }

    /// An app by id, or by name when exactly one app has that name.
    pub fn find(&self, id_or_name: &str) -> Result<Arc<AppHandle>> {
        if let Ok(id) = id_or_name.parse::<u32>() {
            if let Some(app) = self.app(id) {
                return Ok(app);
            }
        }
        let matches: Vec<_> = self
            .apps()
            .into_iter()
            .filter(|a| a.name == id_or_name)
            .collect();
        match matches.len() {
            1 => Ok(matches[0].clone()),
            0 => bail!("no registered app has the id or name {id_or_name:?}"),
            n => bail!(
                "{n} apps are named {id_or_name:?} (ids {:?}): give the id",
                matches.iter().map(|a| a.app_id).collect::<Vec<_>>()
            ),
        }
    }
}

struct Connection {
    fd: OwnedFd,
    peer: UnixCredentials,
    app_id: Option<u32>,
    pidfd: Option<OwnedFd>,
}

struct State {
    listener: OwnedFd,
    wakee: UnixStream,
    connections: Vec<Connection>,
    apps: Arc<Mutex<BTreeMap<u32, Arc<AppHandle>>>>,
    events: Sender<RegistryEvent>,
    max_apps: usize,
    next_app_id: u32,
    buffer: Vec<u8>,
}

/// What to do with a connection after handling its events.
enum Outcome {
    Keep,
    Close(LeaveReason),
}

impl State {
    fn run(&mut self) {
        loop {
            // Poll set: [waker, listener, then per connection its socket and its pidfd].
            let mut fds = Vec::with_capacity(2 + 2 * self.connections.len());
            fds.push(PollFd::new(self.wakee.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for connection in &self.connections {
                fds.push(PollFd::new(connection.fd.as_fd(), PollFlags::POLLIN));
                if let Some(pidfd) = &connection.pidfd {
                    fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("registry poll failed: {e}; the registry stops");
                    return;
                }
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let stop = ready(&fds[0]);
            let accept = ready(&fds[1]);
            drop(fds);
            if stop {
                let mut byte = [0u8; 1];
                let _ = self.wakee.read(&mut byte);
                self.close_all();
                return;
            }
            // Walk connections against their poll slots, collecting the ones to close.
            let mut slot = 2;
            let mut closing = Vec::new();
            for index in 0..self.connections.len() {
                let socket_events = revents[slot];
                slot += 1;
                let exited = if self.connections[index].pidfd.is_some() {
                    slot += 1;
                    !revents[slot - 1].is_empty()
                } else {
                    false
                };
                let outcome = if exited {
                    Outcome::Close(LeaveReason::Exited)
                } else if !socket_events.is_empty() {
                    self.service(index, socket_events)
                } else {
                    Outcome::Keep
                };
                if let Outcome::Close(why) = outcome {
                    closing.push((index, why));
                }
            }
            for (index, why) in closing.into_iter().rev() {
                let connection = self.connections.swap_remove(index);
                self.unregister(connection, why);
            }
            if accept {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(raw) => unsafe { OwnedFd::from_raw_fd(raw) },
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => {
                    log::warn!("accepting an app connection failed: {e}");
                    return;
                }
            };
            if self.connections.len() >= MAX_CONNECTIONS {
                let error = ProtoError::new(
                    ErrorCode::TooManyApps,
                    format!("the agent already holds {MAX_CONNECTIONS} connections"),
                );
                let _ = send_reply(&fd, &error.to_reply(), None);
                continue;
            }
            let peer = match getsockopt(&fd, sockopt::PeerCredentials) {
                Ok(peer) => peer,
                Err(e) => {
                    log::warn!("cannot read the peer credentials of a connection: {e}");
                    continue;
                }
            };
            self.connections.push(Connection {
                fd,
                peer,
                app_id: None,
                pidfd: None,
            });
        }
    }

    /// Handles readiness of connection `index`'s socket.
    fn service(&mut self, index: usize, events: PollFlags) -> Outcome {
        if events.contains(PollFlags::POLLIN) {
            // Drain every packet that is waiting: one poll round may bring several.
            loop {
                let fd = self.connections[index].fd.as_raw_fd();
                // MSG_TRUNC makes recv return the packet's real length, so an oversized
                // packet is recognised as such rather than read as a truncated one.
                match recv(fd, &mut self.buffer, MsgFlags::MSG_TRUNC) {
                    Ok(0) => return Outcome::Close(LeaveReason::HungUp),
                    Ok(len) => {
                        let reply = if len > MAX_PACKET_BYTES {
                            ProtoError::new(
                                ErrorCode::PacketTooLarge,
                                format!(
                                    "packet of {len} bytes is larger than the limit of \
                                     {MAX_PACKET_BYTES} bytes"
                                ),
                            )
                            .to_reply()
                        } else {
                            let packet = self.buffer[..len].to_vec();
                            match self.handle_packet(index, &packet) {
                                Handled::Reply(reply) => reply,
                                Handled::Sent => continue,
                                Handled::Close(why) => return Outcome::Close(why),
                            }
                        };
                        if send_reply(&self.connections[index].fd, &reply, None).is_err() {
                            return Outcome::Close(LeaveReason::Dropped);
                        }
                    }
                    Err(Errno::EAGAIN) => return Outcome::Keep,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return Outcome::Close(LeaveReason::HungUp),
                }
            }
        }
        if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            return Outcome::Close(LeaveReason::HungUp);
        }
        Outcome::Keep
    }

    fn handle_packet(&mut self, index: usize, packet: &[u8]) -> Handled {
        let request = match decode_request(packet) {
            Ok(request) => request,
            Err(e) => {
                let peer = &self.connections[index].peer;
                log::warn!("refused a message from pid {}: {}", peer.pid(), e.message);
                return Handled::Reply(e.to_reply());
            }
        };
        match request {
            Request::Register(register) => self.register(index, register),
            Request::SetTarget { target } => {
                let Some(app_id) = self.connections[index].app_id else {
                    return Handled::Reply(
                        ProtoError::new(
                            ErrorCode::NotRegistered,
                            "set_target before register: register the app first",
                        )
                        .to_reply(),
                    );
                };
                if let Some(handle) = lock(&self.apps).get(&app_id) {
                    *lock(&handle.target) = target.clone();
                }
                log::info!(
                    "app {app_id}: new target, deadline {} ms",
                    target.deadline_ms
                );
                let _ = self
                    .events
                    .send(RegistryEvent::TargetChanged { app_id, target });
                Handled::Reply(Reply::TargetUpdated { app_id })
            }
        }
    }

    fn register(&mut self, index: usize, register: RegisterRequest) -> Handled {
        let (existing, peer_pid, peer_uid) = {
            let connection = &self.connections[index];
            (
                connection.app_id,
                connection.peer.pid(),
                connection.peer.uid(),
            )
        };
        let refuse =
            |code, message: String| Handled::Reply(ProtoError::new(code, message).to_reply());
        if let Some(app_id) = existing {
            return refuse(
                ErrorCode::AlreadyRegistered,
                format!("this connection already registered app {app_id}; open another connection to register another app"),
            );
        }
        if register.pid != peer_pid {
            return refuse(
                ErrorCode::PidMismatch,
                format!(
                    "the message says pid {} but the connection belongs to pid {peer_pid}",
                    register.pid
                ),
            );
        }
        let registered = lock(&self.apps).len();
        if registered >= self.max_apps {
            return refuse(
                ErrorCode::TooManyApps,
                format!(
                    "{registered} apps are registered already (the limit is {}); try again when one exits",
                    self.max_apps
                ),
            );
        }
        let app_id = self.allocate_app_id();
        let initial_subnet = register.default_subnet_id();
        let (memfd, page) = match create_page(app_id, initial_subnet) {
            Ok(created) => created,
            Err(e) => {
                log::error!("cannot create shared memory for {}: {e:#}", register.app);
                return refuse(
                    ErrorCode::Internal,
                    format!("the agent could not create shared memory: {e:#}"),
                );
            }
        };
        let pidfd = pidfd_open(peer_pid);
        if pidfd.is_none() {
            log::debug!("no pidfd for pid {peer_pid}; relying on the connection closing");
        }
        let reply = Reply::Accepted {
            protocol_version: PROTOCOL_VERSION,
            app_id,
            shm_size: SHM_SIZE as u32,
            initial_subnet,
        };
        let handle = Arc::new(AppHandle {
            app_id,
            pid: peer_pid,
            uid: peer_uid,
            name: register.app.clone(),
            devices: register.devices.clone(),
            subnets: register.subnets.clone(),
            default_subnet: initial_subnet,
            joined: Instant::now(),
            target: Mutex::new(register.target.clone()),
            operator_target: Mutex::new(None),
            page,
        });
        log::info!(
            "app {app_id} \"{}\" (pid {peer_pid}) registered: {} sub-networks, deadline {} ms",
            handle.name,
            handle.subnets.len(),
            register.target.deadline_ms
        );
        // Registered before the reply goes out: an app that hears "accepted" is in the
        // registry already. Closing the connection on a failed send unregisters it.
        lock(&self.apps).insert(app_id, handle.clone());
        let connection = &mut self.connections[index];
        connection.app_id = Some(app_id);
        connection.pidfd = pidfd;
        let _ = self.events.send(RegistryEvent::Joined(handle));
        if send_reply(&connection.fd, &reply, Some(&memfd)).is_err() {
            return Handled::Close(LeaveReason::Dropped);
        }
        Handled::Sent
    }

    fn allocate_app_id(&mut self) -> u32 {
        let apps = lock(&self.apps);
        loop {
            let id = self.next_app_id;
            // 0 means "not registered" to clients: skip it when the counter wraps.
            self.next_app_id = self.next_app_id.checked_add(1).unwrap_or(1);
            if !apps.contains_key(&id) {
                return id;
            }
        }
    }

    fn unregister(&mut self, connection: Connection, why: LeaveReason) {
        let Some(app_id) = connection.app_id else {
            return;
        };
        if let Some(handle) = lock(&self.apps).remove(&app_id) {
            log::info!(
                "app {app_id} \"{}\" (pid {}) left: {why:?}",
                handle.name,
                handle.pid
            );
            let _ = self.events.send(RegistryEvent::Left {
                app_id,
                name: handle.name.clone(),
                why,
            });
        }
    }

    fn close_all(&mut self) {
        for connection in std::mem::take(&mut self.connections) {
            self.unregister(connection, LeaveReason::Dropped);
        }
    }
}

enum Handled {
    Reply(Reply),
    /// The reply (with its fd) went out already.
    Sent,
    Close(LeaveReason),
}

/// Sends one reply, with `fd` as SCM_RIGHTS when given. The socket is non-blocking: an
/// app that does not read its replies gets EAGAIN here and is disconnected.
fn send_reply(socket: &OwnedFd, reply: &Reply, fd: Option<&OwnedFd>) -> nix::Result<()> {
    let bytes = encode(reply);
    let iov = [IoSlice::new(&bytes)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = fds.iter().map(|f| ControlMessage::ScmRights(f)).collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// A descriptor that becomes readable when process `pid` exits (Linux 5.3+).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a new descriptor that we alone own.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these locks stays valid if a holder panicked.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
