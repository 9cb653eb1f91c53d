//! The per-inference trace (`DNNGOV_TRACE_DIR`): one CSV line per finished inference,
//! written by the app itself, so that an evaluation measures the same thing under any
//! governor, with or without an agent.
//!
//! Each record is formatted on the stack and written with one `write(2)` to a file opened
//! with `O_APPEND`: nothing is buffered in the process, so a process killed at any moment
//! leaves only whole lines, and concurrent writers never interleave within a line.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use governor_proto::Subnet;

/// The first line of every trace file.
pub const TRACE_HEADER: &str = "end_ns,latency_ns,deadline_ns,subnet,accuracy_pct\n";

/// The environment variable naming the folder of trace files.
pub const TRACE_DIR_ENV: &str = "DNNGOV_TRACE_DIR";

/// Longest suffix kept per sub-network: `,` + a u32 + `,` + an accuracy.
const SUFFIX_BYTES: usize = 48;

/// Longest record: three u64 of at most 20 digits, their commas, the suffix, the newline.
const RECORD_BYTES: usize = 3 * 21 + SUFFIX_BYTES + 1;

/// An open trace file and what its records need from the library.
pub(crate) struct Trace {
    fd: OwnedFd,
    path: PathBuf,
    /// `,<id>,<accuracy>` per library entry, formatted once so that a record copies it.
    suffixes: Vec<(u32, SuffixBytes)>,
    /// So that a full disk is reported once, not at every inference.
    write_failed: AtomicBool,
}

#[derive(Clone, Copy)]
struct SuffixBytes {
    bytes: [u8; SUFFIX_BYTES],
    len: usize,
}

impl SuffixBytes {
    /// `text` fits: at most `SUFFIX_BYTES` bytes.
    fn new(text: &str) -> Self {
        let mut bytes = [0u8; SUFFIX_BYTES];
        let len = text.len();
        bytes[..len].copy_from_slice(text.as_bytes());
        Self { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Trace {
    /// Opens `<dir>/<app>-<pid>.csv` for appending (creating it with its header), or says
    /// why not: the caller warns and runs without a trace.
    pub(crate) fn open(dir: &Path, app: &str, subnets: &[Subnet]) -> Result<Trace, String> {
        // An app name may hold any printable character; a '/' would name another folder.
        let file_name = format!("{}-{}.csv", app.replace('/', "_"), std::process::id());
        let path = dir.join(file_name);
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("{}: the path holds a NUL byte", path.display()))?;
        let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC;
        // O_EXCL first, so that exactly one opener (of two sessions of the same name in
        // one process) writes the header.
        // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
        let (raw, created) = match unsafe {
            libc::open(c_path.as_ptr(), flags | libc::O_CREAT | libc::O_EXCL, 0o644)
        } {
            -1 if errno() == libc::EEXIST => {
                // SAFETY: as above.
                (unsafe { libc::open(c_path.as_ptr(), flags) }, false)
            }
            fd => (fd, true),
        };
        if raw < 0 {
            return Err(format!(
                "cannot open {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: `open` just returned this descriptor to us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if created {
            write_all(&fd, TRACE_HEADER.as_bytes())
                .map_err(|e| format!("cannot write the header of {}: {e}", path.display()))?;
        }
        let suffixes = subnets
            .iter()
            .map(|s| {
                let mut text = format!(",{},{}\n", s.id, s.accuracy_pct);
                // `Display` never uses an exponent: a tiny accuracy would be hundreds of
                // digits long.
                if text.len() > SUFFIX_BYTES {
                    text = format!(",{},{:.6}\n", s.id, s.accuracy_pct);
                }
                (s.id, SuffixBytes::new(&text))
            })
            .collect();
        Ok(Trace {
            fd,
            path,
            suffixes,
            write_failed: AtomicBool::new(false),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: formatted on the stack, one `write(2)`, no allocation.
    #[inline]
    pub(crate) fn record(&self, end_ns: u64, latency_ns: u64, deadline_ns: u64, subnet: u32) {
        let mut buf = [0u8; RECORD_BYTES];
        let mut len = 0;
        for (i, value) in [end_ns, latency_ns, deadline_ns].into_iter().enumerate() {
            if i > 0 {
                buf[len] = b',';
                len += 1;
            }
            len += put_u64(&mut buf[len..], value);
        }
        match self.suffixes.iter().find(|(id, _)| *id == subnet) {
            Some((_, suffix)) => {
                let bytes = suffix.as_bytes();
                buf[len..len + bytes.len()].copy_from_slice(bytes);
                len += bytes.len();
            }
            None => {
                // Not in the library (an app that ran something it did not declare):
                // the id, and an empty accuracy.
                buf[len] = b',';
                len += 1;
                len += put_u64(&mut buf[len..], u64::from(subnet));
                buf[len..len + 2].copy_from_slice(b",\n");
                len += 2;
            }
        }
        // SAFETY: `buf[..len]` is initialised and `fd` is open for as long as `self`.
        let written = unsafe { libc::write(self.fd.as_raw_fd(), buf.as_ptr().cast(), len) };
        if written != len as isize && !self.write_failed.swap(true, Ordering::Relaxed) {
            let why = if written < 0 {
                std::io::Error::last_os_error().to_string()
            } else {
                format!("{written} of {len} bytes written")
            };
            warn(&format!(
                "cannot append to the inference trace {}: {why}; later failures are not reported",
                self.path.display()
            ));
        }
    }
}

/// Writes `value` in decimal at the start of `buf` (at least 20 bytes); returns its length.
#[inline]
fn put_u64(buf: &mut [u8], mut value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[i] = digits[n - 1 - i];
    }
    n
}

fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice and `fd` an open descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A warning through the app's logger, or on stderr when the app installed none (a C or
/// Python app): an evaluation run that silently lost its trace would be worse than a line
/// on stderr.
pub(crate) fn warn(message: &str) {
    if log::log_enabled!(log::Level::Warn) {
        log::warn!("dnngov: {message}");
    } else {
        eprintln!("dnngov: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_u64_writes_every_digit() {
        for value in [0, 7, 10, 1_234_567_890, u64::MAX] {
            let mut buf = [0u8; 20];
            let n = put_u64(&mut buf, value);
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), value.to_string());
        }
    }
}
