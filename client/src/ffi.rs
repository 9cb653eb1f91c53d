//! The C ABI (`client/include/dnngov.h`), a thin layer over [`Session`]. The Python
//! package (`client/python/dnngov`) uses the same functions through ctypes.
//!
//! Errors: functions that can fail return NULL or a negative number and leave a message
//! for `dnngov_last_error()` (per thread). No function panics across the boundary.

use crate::session::{AppSpec, Options, Session};
use governor_proto::{Device, Subnet, Target};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::time::Duration;

/// Bit for `devices`: the app's inferences use the CPU.
pub const DNNGOV_DEVICE_CPU: u32 = 1;
/// Bit for `devices`: the app's inferences use the GPU.
pub const DNNGOV_DEVICE_GPU: u32 = 2;

/// One sub-network, as C declares it. `latency_ms` and `relative_cost` of 0 mean unknown.
#[repr(C)]
pub struct DnngovSubnet {
    pub id: u32,
    pub name: *const c_char,
    pub accuracy_pct: f64,
    pub latency_ms: f64,
    pub relative_cost: f64,
}

/// A target, as C declares it. `period_ms` and `accuracy_floor_pct` of 0 mean none.
#[repr(C)]
pub struct DnngovTarget {
    pub deadline_ms: f64,
    pub period_ms: f64,
    pub accuracy_floor_pct: f64,
    pub priority: u8,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(message: impl Into<String>) {
    let text = message.into().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
}

/// The last error of this thread, or an empty string. Valid until the next failing call.
#[no_mangle]
pub extern "C" fn dnngov_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn optional(value: f64) -> Option<f64> {
    (value != 0.0).then_some(value)
}

fn target_from_c(target: &DnngovTarget) -> Target {
    Target {
        deadline_ms: target.deadline_ms,
        period_ms: optional(target.period_ms),
        accuracy_floor_pct: optional(target.accuracy_floor_pct),
        priority: target.priority,
    }
}

/// # Safety
/// `text` is NULL or a NUL-terminated string.
unsafe fn string(text: *const c_char, what: &str) -> Result<String, String> {
    if text.is_null() {
        return Err(format!("{what} is NULL"));
    }
    CStr::from_ptr(text)
        .to_str()
        .map(str::to_owned)
        .map_err(|_| format!("{what} is not UTF-8"))
}

/// Registers an app. `socket_path` may be NULL (then `$DNNGOV_SOCKET`, else
/// `/run/dnngov/agent.sock`). Returns NULL on an invalid spec or a refusal; with no agent
/// running it returns a session that runs the last (most accurate) sub-network and
/// connects in the background.
///
/// # Safety
/// `app` and `socket_path` are NULL or NUL-terminated; `subnets` points to `n_subnets`
/// entries whose names are NUL-terminated; `target` points to a valid target.
#[no_mangle]
pub unsafe extern "C" fn dnngov_register(
    app: *const c_char,
    devices: u32,
    subnets: *const DnngovSubnet,
    n_subnets: usize,
    target: *const DnngovTarget,
    socket_path: *const c_char,
) -> *mut Session {
    let result = std::panic::catch_unwind(|| {
        let name = string(app, "app name")?;
        if subnets.is_null() || target.is_null() {
            return Err("subnets and target must not be NULL".to_string());
        }
        let entries = std::slice::from_raw_parts(subnets, n_subnets);
        let mut library = Vec::with_capacity(n_subnets);
        for entry in entries {
            library.push(Subnet {
                id: entry.id,
                name: string(entry.name, "sub-network name")?,
                accuracy_pct: entry.accuracy_pct,
                latency_ms: optional(entry.latency_ms),
                relative_cost: optional(entry.relative_cost),
            });
        }
        let mut device_list = Vec::new();
        if devices & DNNGOV_DEVICE_CPU != 0 {
            device_list.push(Device::Cpu);
        }
        if devices & DNNGOV_DEVICE_GPU != 0 {
            device_list.push(Device::Gpu);
        }
        let mut options = Options::default();
        if !socket_path.is_null() {
            options.socket_path = PathBuf::from(string(socket_path, "socket path")?);
        }
        let spec = AppSpec {
            name,
            devices: device_list,
            subnets: library,
            target: target_from_c(&*target),
            default_subnet: None,
        };
        Session::register(spec, options).map_err(|e| e.to_string())
    });
    match result {
        Ok(Ok(session)) => Box::into_raw(Box::new(session)),
        Ok(Err(message)) => {
            set_error(message);
            ptr::null_mut()
        }
        Err(_) => {
            set_error("internal error in dnngov_register");
            ptr::null_mut()
        }
    }
}

/// The sub-network to run now (one atomic load). `session` may not be NULL.
///
/// # Safety
/// `session` comes from `dnngov_register` and was not closed.
#[no_mangle]
pub unsafe extern "C" fn dnngov_current_subnet(session: *const Session) -> u32 {
    (*session).current_subnet()
}

/// Marks the start of an inference with a deadline in ns (0: none); returns its sequence.
///
/// # Safety
/// As `dnngov_current_subnet`.
#[no_mangle]
pub unsafe extern "C" fn dnngov_begin(session: *const Session, deadline_ns: u64) -> u64 {
    (*session).begin(Duration::from_nanos(deadline_ns))
}

/// Marks the end of the inference begun last; returns its latency in ns.
///
/// # Safety
/// As `dnngov_current_subnet`.
#[no_mangle]
pub unsafe extern "C" fn dnngov_end(session: *const Session) -> u64 {
    (*session).end().as_nanos() as u64
}

/// Tells the agent the app now runs `subnet`.
///
/// # Safety
/// As `dnngov_current_subnet`.
#[no_mangle]
pub unsafe extern "C" fn dnngov_ack_subnet(session: *const Session, subnet: u32) {
    (*session).ack_subnet(subnet)
}

/// Changes the target; 0 on success, -1 on an invalid target (see `dnngov_last_error`).
///
/// # Safety
/// As `dnngov_current_subnet`; `target` points to a valid target.
#[no_mangle]
pub unsafe extern "C" fn dnngov_set_target(
    session: *const Session,
    target: *const DnngovTarget,
) -> c_int {
    if target.is_null() {
        set_error("target is NULL");
        return -1;
    }
    match (*session).set_target(target_from_c(&*target)) {
        Ok(()) => 0,
        Err(e) => {
            set_error(e.to_string());
            -1
        }
    }
}

/// 1 while an agent governs the app, else 0.
///
/// # Safety
/// As `dnngov_current_subnet`.
#[no_mangle]
pub unsafe extern "C" fn dnngov_is_connected(session: *const Session) -> c_int {
    c_int::from((*session).is_connected())
}

/// The agent's id for this app, 0 while not registered.
///
/// # Safety
/// As `dnngov_current_subnet`.
#[no_mangle]
pub unsafe extern "C" fn dnngov_app_id(session: *const Session) -> u32 {
    (*session).app_id()
}

/// Unregisters and frees the session. NULL is ignored.
///
/// # Safety
/// `session` comes from `dnngov_register` and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn dnngov_close(session: *mut Session) {
    if !session.is_null() {
        drop(Box::from_raw(session));
    }
}
