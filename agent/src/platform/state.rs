//! Takeover and restore. Before the first write every file the agent may change is saved,
//! byte for byte, to a state file written atomically (temp file, fsync, rename), so a
//! process killed at any point leaves either no state file (nothing changed yet) or a
//! complete one. [`restore`] puts the files back from it, in the order the kernel accepts;
//! [`Takeover`] is the guard that does so when dropped, and `dnngovctl restore` calls
//! [`restore`] after a crash.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::actuate::{Actuator, ApplyReport, Decision, DomainError};
use super::domain::{Domain, DomainId};
use super::sysfs::{Sysfs, SysfsError};
use super::units::FreqUnit;

pub const DEFAULT_STATE_FILE: &str = "/run/dnngov/saved-state.json";

/// Bumped when the layout changes, so an older `dnngovctl` refuses a newer file.
pub const STATE_FORMAT: u32 = 1;

/// What a saved file is to its domain; decides the order of restoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRole {
    Governor,
    Min,
    Max,
    /// `scaling_setspeed`, `userspace/set_freq`, EMC `rate`: derived by the kernel from the
    /// governor, so restored only where it still differs once the governor is back.
    Speed,
    Lock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    /// Root-relative.
    pub path: PathBuf,
    pub role: FileRole,
    /// Exact content, newline included; `None` when the file did not exist.
    pub content: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDomain {
    pub id: DomainId,
    pub unit: FreqUnit,
    pub files: Vec<SavedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    /// The process that took over, for messages.
    pub pid: u32,
    /// The root it ran against, for messages; restore uses the root it is given.
    pub sysfs_root: PathBuf,
    pub domains: Vec<SavedDomain>,
}

impl SavedState {
    /// Reads every file the domains' actuation may write. A domain with a file that cannot
    /// be read is left out and returned with its error: what cannot be saved must not be
    /// changed.
    pub fn capture(sysfs: &Sysfs, domains: &[Domain]) -> (SavedState, Vec<DomainError>) {
        let mut saved = Vec::new();
        let mut failed = Vec::new();
        for domain in domains {
            match capture_domain(sysfs, domain) {
                Ok(d) => saved.push(d),
                Err(error) => failed.push(DomainError {
                    domain: domain.id.clone(),
                    error: error.into(),
                }),
            }
        }
        let state = SavedState {
            format: STATE_FORMAT,
            pid: std::process::id(),
            sysfs_root: sysfs.root().to_path_buf(),
            domains: saved,
        };
        (state, failed)
    }

    pub fn load(path: &Path) -> anyhow::Result<SavedState> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the state file {}", path.display()))?;
        SavedState::parse(&text, path)
    }

    /// Parses a state file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<SavedState> {
        let state: SavedState = serde_json::from_str(text)
            .with_context(|| format!("the state file {} is not valid", path.display()))?;
        if state.format != STATE_FORMAT {
            anyhow::bail!(
                "the state file {} has format {}, this build reads format {STATE_FORMAT}",
                path.display(),
                state.format
            );
        }
        // Restore writes every file named here: none may lie outside `sys/` of the root.
        for file in state.domains.iter().flat_map(|d| &d.files) {
            if !is_under_sys(&file.path) {
                anyhow::bail!(
                    "the state file {} names {:?}, which is not a path under sys/ without \"..\": \
                     restore writes only frequency files",
                    path.display(),
                    file.path
                );
            }
        }
        Ok(state)
    }

    /// Temp file in the same directory, fsync, rename, fsync of the directory: a crash
    /// leaves the old file or the new one, never half of one.
    pub fn store(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let name = path
            .file_name()
            .with_context(|| format!("{} is not a file path", path.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let json = serde_json::to_vec_pretty(self).context("cannot encode the saved state")?;
        let write = || -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, path)?;
            fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write the state file {}", path.display()))?;
        Ok(())
    }
}

fn capture_domain(sysfs: &Sysfs, domain: &Domain) -> Result<SavedDomain, SysfsError> {
    let k = domain.knobs;
    let mut files = Vec::new();
    let roles = [
        (k.governor, FileRole::Governor),
        (k.min, FileRole::Min),
        (k.max, FileRole::Max),
        (Some(k.speed), FileRole::Speed),
        (k.lock, FileRole::Lock),
    ];
    for (name, role) in roles {
        let Some(name) = name else { continue };
        let path = domain.file(name);
        let content = match sysfs.read_raw(&path) {
            Ok(c) => Some(c),
            // The devfreq userspace directory exists only under that governor.
            Err(SysfsError::Read { source, .. })
                if role == FileRole::Speed && source.kind() == io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        files.push(SavedFile {
            path,
            role,
            content,
        });
    }
    Ok(SavedDomain {
        id: domain.id.clone(),
        unit: k.unit,
        files,
    })
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Root-relative files written.
    pub restored: Vec<PathBuf>,
    pub errors: Vec<SysfsError>,
    /// There was no state file: nothing had been taken over.
    pub nothing_to_restore: bool,
}

impl RestoreReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Whether `path` (root-relative, a leading `/` allowed) names something under `sys/`
/// with plain names only: no `..`, no `.`.
fn is_under_sys(path: &Path) -> bool {
    let mut components = path.components().peekable();
    if components.peek() == Some(&Component::RootDir) {
        components.next();
    }
    components.next() == Some(Component::Normal("sys".as_ref()))
        && components.all(|c| matches!(c, Component::Normal(_)))
}

/// Puts back every saved file under `sysfs_root`, best effort, and removes the state file
/// when everything was restored (kept otherwise, so a second try is possible). A missing
/// state file is not an error: it means nothing was taken over.
pub fn restore(state_file: &Path, sysfs_root: &Path) -> anyhow::Result<RestoreReport> {
    if !state_file.exists() {
        return Ok(RestoreReport {
            nothing_to_restore: true,
            ..RestoreReport::default()
        });
    }
    let state = SavedState::load(state_file)?;
    let report = restore_state(&state, &Sysfs::new(sysfs_root));
    if report.is_ok() {
        fs::remove_file(state_file)
            .with_context(|| format!("cannot remove the state file {}", state_file.display()))?;
    }
    Ok(report)
}

/// Restores one saved state without touching the state file.
pub fn restore_state(state: &SavedState, sysfs: &Sysfs) -> RestoreReport {
    let mut report = RestoreReport::default();
    for domain in &state.domains {
        restore_domain(domain, sysfs, &mut report);
    }
    report
}

fn find(domain: &SavedDomain, role: FileRole) -> Option<&SavedFile> {
    domain.files.iter().find(|f| f.role == role)
}

fn restore_domain(domain: &SavedDomain, sysfs: &Sysfs, report: &mut RestoreReport) {
    let mut put_back = |file: Option<&SavedFile>| -> Result<(), SysfsError> {
        let Some(SavedFile {
            path,
            role,
            content: Some(content),
        }) = file
        else {
            return Ok(());
        };
        let current = match sysfs.read_raw(path) {
            Ok(current) => Some(current),
            // Gone with the governor that created it: the kernel has already restored it.
            Err(SysfsError::Read { source, .. })
                if *role == FileRole::Speed && source.kind() == io::ErrorKind::NotFound =>
            {
                return Ok(())
            }
            Err(_) => None,
        };
        if current.as_deref() == Some(content.as_str()) {
            return Ok(());
        }
        sysfs.write_unchecked(path, content)?;
        let read = sysfs.read(path)?;
        if read != content.trim() {
            return Err(SysfsError::ReadBack {
                path: sysfs.path(path),
                value: content.trim().to_string(),
                read,
            });
        }
        report.restored.push(path.clone());
        Ok(())
    };
    let mut errors = Vec::new();
    let mut attempt = |file: Option<&SavedFile>| {
        if let Err(e) = put_back(file) {
            errors.push(e);
        }
    };

    // Governor first: it resets the speed file, and limits written under the agent's
    // governor would otherwise be judged against the wrong one.
    attempt(find(domain, FileRole::Governor));
    let (min, max) = (find(domain, FileRole::Min), find(domain, FileRole::Max));
    let value = |f: Option<&SavedFile>| {
        f.and_then(|f| f.content.as_deref())
            .and_then(|c| domain.unit.parse(c))
    };
    let current_min = min.and_then(|f| sysfs.read_freq(&f.path, domain.unit).ok());
    // Keep min <= max at every step: if the saved max is below the current min, the min
    // must come down first.
    match (value(max), current_min) {
        (Some(saved_max), Some(current_min)) if saved_max < current_min => {
            attempt(min);
            attempt(max);
        }
        _ => {
            attempt(max);
            attempt(min);
        }
    }
    attempt(find(domain, FileRole::Speed));
    attempt(find(domain, FileRole::Lock));
    report.errors.extend(errors);
}

/// The agent's hold on the platform: created by saving the state and preparing every
/// domain, restores everything when dropped (normal exit, or unwinding from a panic).
#[derive(Debug)]
pub struct Takeover {
    actuator: Actuator,
    state_file: PathBuf,
    state: SavedState,
    prepare_report: ApplyReport,
    restored: bool,
}

impl Takeover {
    /// Saves, then prepares. A state file left by a previous instance that was not restored
    /// is restored first: saving over it would record the previous instance's settings as
    /// the machine's own.
    pub fn begin(
        sysfs: Sysfs,
        domains: Vec<Domain>,
        state_file: &Path,
    ) -> anyhow::Result<Takeover> {
        if state_file.exists() {
            log::warn!(
                "{} exists: a previous instance did not restore; restoring it first",
                state_file.display()
            );
            let report = restore(state_file, sysfs.root())?;
            if !report.is_ok() {
                anyhow::bail!(
                    "could not restore the settings left in {}: {}",
                    state_file.display(),
                    report
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
        }
        let (state, unsaved) = SavedState::capture(&sysfs, &domains);
        if state.domains.is_empty() {
            anyhow::bail!(
                "cannot take over any domain, because their settings cannot be read: {}",
                unsaved
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        state.store(state_file)?;
        let saved: Vec<Domain> = domains
            .into_iter()
            .filter(|d| state.domains.iter().any(|s| s.id == d.id))
            .collect();
        let mut actuator = Actuator::new(sysfs, saved);
        let mut prepare_report = actuator.prepare();
        prepare_report.errors.splice(0..0, unsaved);
        for e in &prepare_report.errors {
            log::error!("{e}; it is left ungoverned");
        }
        Ok(Takeover {
            actuator,
            state_file: state_file.to_path_buf(),
            state,
            prepare_report,
            restored: false,
        })
    }

    /// What taking over wrote, and the domains left out because their settings could not
    /// be read or written.
    pub fn prepare_report(&self) -> &ApplyReport {
        &self.prepare_report
    }

    pub fn actuator(&self) -> &Actuator {
        &self.actuator
    }

    pub fn saved_state(&self) -> &SavedState {
        &self.state
    }

    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    pub fn apply(&self, decision: &Decision) -> ApplyReport {
        self.actuator.apply(decision)
    }

    /// Restores now and reports; dropping afterwards does nothing more.
    pub fn restore(mut self) -> anyhow::Result<RestoreReport> {
        self.restored = true;
        restore(&self.state_file, self.actuator.sysfs().root())
    }
}

impl Drop for Takeover {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        match restore(&self.state_file, self.actuator.sysfs().root()) {
            Ok(report) => {
                for e in &report.errors {
                    log::error!("restoring: {e}");
                }
            }
            Err(e) => log::error!("restoring: {e:#}"),
        }
    }
}
