//! The Jetson external memory clock (EMC). On Xavier it is not a devfreq device but a bpmp
//! clock in debugfs (`sys/kernel/debug/bpmp/debug/clk/emc/`): setting `mrq_rate_locked`
//! to 1 stops the firmware from scaling it, then `rate` is the frequency. Hz on disk; needs
//! a mounted debugfs, and root to write it (debugfs is root's, out of udev's reach): a
//! dnngovd running as its own user sees it but leaves it alone ([`not_writable`]).

use std::path::PathBuf;

use super::sysfs::{Sysfs, SysfsError};
use super::units::{FreqUnit, Hz};

pub const EMC_DIR: &str = "sys/kernel/debug/bpmp/debug/clk/emc";
pub const RATE: &str = "rate";
pub const MIN_RATE: &str = "min_rate";
pub const MAX_RATE: &str = "max_rate";
pub const LOCK: &str = "mrq_rate_locked";
pub const UNIT: FreqUnit = FreqUnit::Hz;

/// The EMC clock as discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emc {
    pub dir: PathBuf,
    pub rate: Hz,
    pub min_rate: Hz,
    pub max_rate: Hz,
    pub locked: bool,
}

impl Emc {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The EMC clock, or `None` where there is no bpmp debugfs (not a Jetson, debugfs not
/// mounted, or not visible to this user).
pub fn discover(sysfs: &Sysfs) -> Result<Option<Emc>, SysfsError> {
    let dir = PathBuf::from(EMC_DIR);
    if !sysfs.path(dir.join(RATE)).is_file() {
        return Ok(None);
    }
    Ok(Some(Emc {
        rate: sysfs.read_freq(dir.join(RATE), UNIT)?,
        min_rate: sysfs.read_freq(dir.join(MIN_RATE), UNIT)?,
        max_rate: sysfs.read_freq(dir.join(MAX_RATE), UNIT)?,
        locked: sysfs.read_u64(dir.join(LOCK))? != 0,
        dir,
    }))
}

/// Why the EMC clock found in `emc` cannot be set by this process, if it cannot: debugfs is
/// root's (mounted 0700, files 0644 or 0600) and udev cannot hand its files to a group, so
/// a dnngovd running as its own user sees the clock (with CAP_DAC_READ_SEARCH) but cannot
/// write it. Checked with the effective ids and capabilities, as a write would be.
pub fn not_writable(sysfs: &Sysfs, emc: &Emc) -> Option<String> {
    let blocked: Vec<String> = [RATE, LOCK]
        .iter()
        .map(|name| sysfs.path(emc.file(name)))
        .filter(|path| !writable(path))
        .map(|path| path.display().to_string())
        .collect();
    if blocked.is_empty() {
        return None;
    }
    let user = crate::peer::user_name(nix::unistd::geteuid().as_raw());
    Some(format!(
        "user {user} cannot write {} (debugfs is root's, and udev rules do not reach it), so \
         the memory clock is left as it is; run dnngovd as root to govern it \
         (docs/operator-guide.md, \"Running as root\")",
        blocked.join(" and ")
    ))
}

/// Whether this process may open `path` for writing (effective ids and capabilities).
fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; faccessat only reads it.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}
