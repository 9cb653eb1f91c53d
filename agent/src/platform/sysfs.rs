//! The file-system root every platform path hangs from (`/` on a board, a fixture tree in
//! tests), and the checked read and write of one attribute file. Every write is read back:
//! the kernel clamps limits silently and a fixture tree accepts anything, so comparing what
//! was written with what reads back is the one check that means the same in both.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::units::{FreqUnit, Hz};

/// Where `sys/...` is looked up. Paths handed to it are relative (`sys/class/devfreq`).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    /// Set by [`Sysfs::keeping_files_open`]: read files stay open, shared by the clones.
    open: Option<Arc<OpenFiles>>,
}

impl PartialEq for Sysfs {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

impl Eq for Sysfs {}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/")
    }
}

/// Attribute files kept open between reads. An attribute read again from offset 0 is
/// generated afresh by the kernel (sysfs, debugfs and hwmon alike), so a loop that reads
/// the same few files every tick pays one `pread` each instead of a path walk, an open and
/// a close. A fixture tree's files are rewritten in place, which reads the same way.
#[derive(Default)]
struct OpenFiles(Mutex<HashMap<PathBuf, fs::File>>);

/// Files beyond this many are read the ordinary way (a loop reads a few dozen).
const MAX_OPEN_FILES: usize = 128;

impl fmt::Debug for OpenFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.lock().map_or(0, |files| files.len());
        write!(f, "OpenFiles({count} open)")
    }
}

impl OpenFiles {
    /// The file's content through a kept-open descriptor; `None` when that does not work
    /// (not openable, gone since), so the caller reads the ordinary way and reports the
    /// error it meets.
    fn read(&self, path: &Path) -> Option<String> {
        let mut files = self.0.lock().ok()?;
        if let Some(file) = files.get(path) {
            match read_from_start(file) {
                Ok(text) => return Some(text),
                // Removed (ENODEV on a vanished device) or replaced: open it again.
                Err(_) => {
                    files.remove(path);
                }
            }
        }
        if files.len() >= MAX_OPEN_FILES {
            return None;
        }
        let file = fs::File::open(path).ok()?;
        let text = read_from_start(&file).ok()?;
        files.insert(path.to_path_buf(), file);
        Some(text)
    }
}

fn read_from_start(file: &fs::File) -> io::Result<String> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = file.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What went wrong with a write, so a caller can branch (EINVAL on a governor means
/// "not built", EBUSY means "try again later").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFailure {
    /// ENOENT: the attribute does not exist (not built, device gone, governor not active).
    Missing,
    /// EACCES / EPERM / EROFS.
    PermissionDenied,
    /// EINVAL: the kernel refused the value.
    Invalid,
    /// EBUSY.
    Busy,
    /// The path is a directory or something else that is not an attribute file.
    NotAFile,
    Other,
}

impl WriteFailure {
    fn of(err: &io::Error) -> WriteFailure {
        match err.raw_os_error() {
            Some(libc::ENOENT) => WriteFailure::Missing,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                WriteFailure::PermissionDenied
            }
            Some(libc::EINVAL) => WriteFailure::Invalid,
            Some(libc::EBUSY) => WriteFailure::Busy,
            Some(libc::EISDIR) | Some(libc::ENOTDIR) => WriteFailure::NotAFile,
            _ => WriteFailure::Other,
        }
    }
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteFailure::Missing => "the file does not exist",
            WriteFailure::PermissionDenied => "permission denied",
            WriteFailure::Invalid => "the kernel rejected the value (EINVAL)",
            WriteFailure::Busy => "the device is busy (EBUSY)",
            WriteFailure::NotAFile => "the path is not an attribute file",
            WriteFailure::Other => "the write failed",
        })
    }
}

/// An error on one attribute file; always names the file, and the value for writes.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} holds {content:?}, which is not {expected}", path.display())]
    Parse {
        path: PathBuf,
        content: String,
        expected: &'static str,
    },
    #[error("cannot write {value:?} to {}: {failure} ({source})", path.display())]
    Write {
        path: PathBuf,
        value: String,
        failure: WriteFailure,
        source: io::Error,
    },
    #[error("wrote {value:?} to {} but it reads back {read:?}", path.display())]
    ReadBack {
        path: PathBuf,
        value: String,
        read: String,
    },
}

impl SysfsError {
    /// The failure class of a write, `None` for reads and read-back mismatches.
    pub fn write_failure(&self) -> Option<WriteFailure> {
        match self {
            SysfsError::Write { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            SysfsError::Read { path, .. }
            | SysfsError::Parse { path, .. }
            | SysfsError::Write { path, .. }
            | SysfsError::ReadBack { path, .. } => path,
        }
    }
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs {
            root: root.into(),
            open: None,
        }
    }

    /// The same root, keeping every file it reads open for the next read (for a loop that
    /// reads the same attributes many times a second). Writes are unaffected.
    pub fn keeping_files_open(&self) -> Sysfs {
        Sysfs {
            root: self.root.clone(),
            open: Some(Arc::new(OpenFiles::default())),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute path of a root-relative one. A leading `/` is ignored so that paths copied
    /// from documentation (`/sys/...`) still land under a fixture root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.root.join(rel)
    }

    pub fn exists(&self, rel: impl AsRef<Path>) -> bool {
        self.path(rel).exists()
    }

    /// The file's content exactly as stored, newline included.
    pub fn read_raw(&self, rel: impl AsRef<Path>) -> Result<String, SysfsError> {
        let path = self.path(rel);
        if let Some(text) = self.open.as_ref().and_then(|open| open.read(&path)) {
            return Ok(text);
        }
        fs::read_to_string(&path).map_err(|source| SysfsError::Read { path, source })
    }

    /// The file's content without surrounding whitespace.
    pub fn read(&self, rel: impl AsRef<Path>) -> Result<String, SysfsError> {
        Ok(self.read_raw(rel)?.trim().to_string())
    }

    /// `None` when the file does not exist; other read errors are errors.
    pub fn read_optional(&self, rel: impl AsRef<Path>) -> Result<Option<String>, SysfsError> {
        match self.read(rel) {
            Ok(text) => Ok(Some(text)),
            Err(SysfsError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn read_u64(&self, rel: impl AsRef<Path>) -> Result<u64, SysfsError> {
        let rel = rel.as_ref();
        let text = self.read(rel)?;
        text.parse().map_err(|_| SysfsError::Parse {
            path: self.path(rel),
            content: text,
            expected: "an unsigned integer",
        })
    }

    pub fn read_i64(&self, rel: impl AsRef<Path>) -> Result<i64, SysfsError> {
        let rel = rel.as_ref();
        let text = self.read(rel)?;
        text.parse().map_err(|_| SysfsError::Parse {
            path: self.path(rel),
            content: text,
            expected: "an integer",
        })
    }

    pub fn read_freq(&self, rel: impl AsRef<Path>, unit: FreqUnit) -> Result<Hz, SysfsError> {
        let rel = rel.as_ref();
        let text = self.read(rel)?;
        unit.parse(&text).ok_or_else(|| SysfsError::Parse {
            path: self.path(rel),
            content: text,
            expected: "a frequency",
        })
    }

    /// Writes `value` plus a newline (what `echo` does, so a fixture file keeps the shape the
    /// kernel prints) in one write(2), then reads back and compares trimmed text. The file
    /// is never created: a missing attribute is an error, not a new file in /sys.
    pub fn write_checked(&self, rel: impl AsRef<Path>, value: &str) -> Result<(), SysfsError> {
        let rel = rel.as_ref();
        self.write_unchecked(rel, &format!("{value}\n"))?;
        let read = self.read(rel)?;
        if read != value.trim() {
            return Err(SysfsError::ReadBack {
                path: self.path(rel),
                value: value.to_string(),
                read,
            });
        }
        Ok(())
    }

    /// Writes `raw` exactly as given, without a read-back (restoring saved content whose
    /// newline must survive byte for byte).
    pub fn write_unchecked(&self, rel: impl AsRef<Path>, raw: &str) -> Result<(), SysfsError> {
        let path = self.path(rel);
        let result = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut file| file.write_all(raw.as_bytes()));
        result.map_err(|source| SysfsError::Write {
            failure: WriteFailure::of(&source),
            value: raw.trim_end().to_string(),
            path,
            source,
        })
    }

    /// Names of the entries of a directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, rel: impl AsRef<Path>) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.path(rel)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort_by(|a, b| natural_cmp(a, b));
        names
    }
}

/// Orders `policy2` before `policy10`, so discovery lists domains as people number them.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(s: &str) -> (&str, Option<u64>) {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (head, tail) = s.split_at(s.len() - digits);
        (head, tail.parse().ok())
    }
    let (ha, na) = split(a);
    let (hb, nb) = split(b);
    ha.cmp(hb).then(na.cmp(&nb)).then(a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slash_stays_under_the_root() {
        let s = Sysfs::new("/tmp/x");
        assert_eq!(s.path("/sys/a"), PathBuf::from("/tmp/x/sys/a"));
        assert_eq!(s.path("sys/a"), PathBuf::from("/tmp/x/sys/a"));
    }

    #[test]
    fn natural_order_puts_policy2_before_policy10() {
        let mut v = vec!["policy10", "policy2", "policy0"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["policy0", "policy2", "policy10"]);
    }

    #[test]
    fn kept_open_files_read_what_is_there_now() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("scaling_cur_freq");
        std::fs::write(&f, "1190400\n").unwrap();
        let s = Sysfs::new(dir.path()).keeping_files_open();
        let clone = s.clone();
        assert_eq!(s.read_u64("scaling_cur_freq").unwrap(), 1_190_400);
        // Rewritten in place (what the kernel's attributes and the fixtures do): the
        // kept descriptor reads the new value, through every clone.
        std::fs::write(&f, "729600\n").unwrap();
        assert_eq!(clone.read_u64("scaling_cur_freq").unwrap(), 729_600);
        std::fs::write(&f, "1907200 and more text than before\n").unwrap();
        assert_eq!(
            s.read("scaling_cur_freq").unwrap(),
            "1907200 and more text than before"
        );
        // Missing files and directories still give the ordinary errors naming the path.
        let err = s.read("gone").unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(s.read("d").is_err());
        assert_eq!(
            format!("{:?}", s.open.as_ref().unwrap()),
            "OpenFiles(1 open)"
        );
        // Writes go through their own descriptor and are read back through the kept one.
        s.write_checked("scaling_cur_freq", "115200").unwrap();
        assert_eq!(s.read_u64("scaling_cur_freq").unwrap(), 115_200);
    }

    #[test]
    fn write_never_creates_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysfs::new(dir.path());
        let err = s.write_checked("nope", "1").unwrap_err();
        assert_eq!(err.write_failure(), Some(WriteFailure::Missing));
        assert!(!dir.path().join("nope").exists());
        assert!(err.to_string().contains("nope") && err.to_string().contains("\"1\""));
    }

    #[test]
    fn write_appends_newline_and_checks_read_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "0\n").unwrap();
        let s = Sysfs::new(dir.path());
        s.write_checked("f", "42").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("f")).unwrap(),
            "42\n"
        );
    }
}
