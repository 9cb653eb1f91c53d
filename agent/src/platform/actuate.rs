//! Applying frequency decisions to domains. Best effort across domains: every domain is
//! tried and errors are collected, because a GPU that refuses a value must not leave the
//! CPUs at the previous decision. Within a domain the first failure stops it, because its
//! later writes assume the earlier ones landed.
//!
//! Rules kept here: nothing is written when a file already holds the value; min and max move
//! in the order that keeps min <= max at every step (older kernels reject min > max); a
//! maximum never goes above what the domain had at discovery (nvpmodel, an operator, a power
//! cap) nor above what thermal throttling allows now; a value the kernel settled differently
//! (a limit it clamps silently) is reported on every apply but not written again until the
//! decision or the file changes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use super::cpufreq::Frequencies;
use super::domain::{Domain, DomainId, Mechanism};
use super::sysfs::{Sysfs, SysfsError, WriteFailure};
use super::thermal::ceiling_for_state;
use super::units::Hz;

/// The frequency wished for each domain. Domains left out are not touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub targets: BTreeMap<DomainId, Hz>,
}

impl Decision {
    pub fn new() -> Decision {
        Decision::default()
    }

    pub fn with(mut self, domain: DomainId, freq: Hz) -> Decision {
        self.targets.insert(domain, freq);
        self
    }
}

/// One file written, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Root-relative.
    pub path: PathBuf,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ActuationError {
    #[error(transparent)]
    Sysfs(#[from] SysfsError),
    #[error("the domain is not governed (not discovered, or it could not be taken over)")]
    UnknownDomain,
}

#[derive(Debug, thiserror::Error)]
#[error("{domain}: {error}")]
pub struct DomainError {
    pub domain: DomainId,
    #[source]
    pub error: ActuationError,
}

/// What one apply or takeover did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub writes: Vec<Write>,
    /// The frequency each domain was set to (after table rounding and ceilings).
    pub applied: BTreeMap<DomainId, Hz>,
    pub errors: Vec<DomainError>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Drives a set of domains under one root.
#[derive(Debug)]
pub struct Actuator {
    sysfs: Sysfs,
    domains: Vec<Domain>,
    /// Per file: the value last written and the different value it read back. Rewriting it
    /// every tick would change nothing but the kernel's load.
    settled: Mutex<HashMap<PathBuf, (String, String)>>,
}

/// Checked writes of one apply, recorded in order.
struct Writer<'a> {
    sysfs: &'a Sysfs,
    settled: &'a Mutex<HashMap<PathBuf, (String, String)>>,
    log: &'a mut Vec<Write>,
}

impl Writer<'_> {
    /// Reads first and writes only on a difference, so an unchanged decision costs reads only
    /// and never disturbs the kernel (a governor write restarts the governor).
    fn value(&mut self, rel: PathBuf, value: &str) -> Result<(), SysfsError> {
        let current = self.sysfs.read(&rel).ok();
        if current.as_deref() == Some(value) {
            return Ok(());
        }
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(current), Some((asked, got))) = (&current, settled.get(&rel)) {
            if asked == value && got == current {
                return Err(SysfsError::ReadBack {
                    path: self.sysfs.path(&rel),
                    value: value.to_string(),
                    read: current.clone(),
                });
            }
        }
        let result = self.sysfs.write_checked(&rel, value);
        match &result {
            Ok(()) => {
                settled.remove(&rel);
            }
            Err(SysfsError::ReadBack { read, .. }) => {
                settled.insert(rel.clone(), (value.to_string(), read.clone()));
            }
            Err(_) => return result,
        }
        self.log.push(Write {
            path: rel,
            value: value.to_string(),
        });
        result
    }

    fn freq(&mut self, domain: &Domain, name: &str, freq: Hz) -> Result<(), SysfsError> {
        self.value(domain.file(name), &domain.knobs.unit.format(freq))
    }
}

impl Actuator {
    pub fn new(sysfs: Sysfs, domains: Vec<Domain>) -> Actuator {
        Actuator {
            sysfs,
            domains,
            settled: Mutex::new(HashMap::new()),
        }
    }

    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    pub fn sysfs(&self) -> &Sysfs {
        &self.sysfs
    }

    fn writer<'a>(&'a self, log: &'a mut Vec<Write>) -> Writer<'a> {
        Writer {
            sysfs: &self.sysfs,
            settled: &self.settled,
            log,
        }
    }

    /// Puts each domain under control: the `userspace` governor where planned (falling back
    /// to pinning when the kernel refuses it), the EMC lock, and the floor lowered once to the
    /// hardware minimum. Jetson nvpmodel sets the CPU floor to 1190400 kHz in every mode;
    /// lowering it here, once and on purpose, is what lets a decision go below it, and the
    /// saved state puts it back.
    ///
    /// A domain that cannot be prepared is dropped from the actuator: driving it would fail
    /// on every decision, and one error now says more than one per tick.
    pub fn prepare(&mut self) -> ApplyReport {
        let mut report = ApplyReport::default();
        let mut failed = Vec::new();
        let mut pinned = Vec::new();
        for (i, domain) in self.domains.iter().enumerate() {
            let mut writer = self.writer(&mut report.writes);
            match prepare_domain(&mut writer, domain) {
                Ok(Prepared::AsPlanned) => {}
                Ok(Prepared::Pinned) => pinned.push(i),
                Err(error) => {
                    failed.push(i);
                    report.errors.push(DomainError {
                        domain: domain.id.clone(),
                        error: error.into(),
                    });
                }
            }
        }
        for i in pinned {
            self.domains[i].mechanism = Mechanism::Pin;
        }
        for i in failed.into_iter().rev() {
            self.domains.remove(i);
        }
        report
    }

    /// The highest frequency the domain may be given now.
    pub fn ceiling(&self, domain: &Domain) -> Result<Hz, SysfsError> {
        let mut ceiling = match (domain.mechanism, domain.knobs.max) {
            // Under userspace and for the EMC the max file is never written, so whatever it
            // says now (an nvpmodel mode change, a thermal clamp the kernel applied) is the cap.
            (Mechanism::Userspace | Mechanism::EmcLock, Some(max)) => self
                .sysfs
                .read_freq(domain.file(max), domain.knobs.unit)?
                .min(domain.frequencies.highest()),
            _ => domain.max_at_discovery.min(domain.frequencies.highest()),
        };
        for state_file in &domain.cooling_states {
            let state = self.sysfs.read_u64(state_file)?;
            let cap = match &domain.frequencies {
                Frequencies::Table(table) => ceiling_for_state(table, state),
                Frequencies::Range { .. } => None,
            };
            if let Some(cap) = cap {
                ceiling = ceiling.min(cap);
            }
        }
        Ok(ceiling)
    }

    /// Applies a decision, best effort. Domains not named are left alone.
    pub fn apply(&self, decision: &Decision) -> ApplyReport {
        let mut report = ApplyReport::default();
        for (id, &wish) in &decision.targets {
            let Some(domain) = self.domains.iter().find(|d| &d.id == id) else {
                report.errors.push(DomainError {
                    domain: id.clone(),
                    error: ActuationError::UnknownDomain,
                });
                continue;
            };
            match self.apply_domain(domain, wish, &mut report.writes) {
                Ok(freq) => {
                    report.applied.insert(id.clone(), freq);
                }
                Err(error) => report.errors.push(DomainError {
                    domain: id.clone(),
                    error: error.into(),
                }),
            }
        }
        report
    }

    fn apply_domain(
        &self,
        domain: &Domain,
        wish: Hz,
        writes: &mut Vec<Write>,
    ) -> Result<Hz, SysfsError> {
        let ceiling = self.ceiling(domain)?;
        let freq = domain.frequencies.resolve(wish, ceiling);
        let unit = domain.knobs.unit;
        let mut w = self.writer(writes);
        match domain.mechanism {
            Mechanism::Userspace => {
                let min = domain.knobs.min.expect("userspace domains have a min file");
                // Someone (nvpmodel on a mode change) raised the floor again: lower it only
                // when it is in the way of this decision.
                if self.sysfs.read_freq(domain.file(min), unit)? > freq {
                    let floor = domain.frequencies.lowest();
                    log::info!(
                        "{}: floor raised externally; lowering it to {floor}",
                        domain.id
                    );
                    w.freq(domain, min, floor)?;
                }
                w.freq(domain, domain.knobs.speed, freq)?;
            }
            Mechanism::Pin => {
                let (min, max) = (
                    domain.knobs.min.expect("pinned domains have a min file"),
                    domain.knobs.max.expect("pinned domains have a max file"),
                );
                let current_min = self.sysfs.read_freq(domain.file(min), unit)?;
                if freq >= current_min {
                    w.freq(domain, max, freq)?;
                    w.freq(domain, min, freq)?;
                } else {
                    w.freq(domain, min, freq)?;
                    w.freq(domain, max, freq)?;
                }
            }
            Mechanism::EmcLock => {
                w.freq(domain, domain.knobs.speed, freq)?;
            }
        }
        Ok(freq)
    }
}

enum Prepared {
    AsPlanned,
    /// The kernel refused the userspace governor.
    Pinned,
}

fn prepare_domain(w: &mut Writer, domain: &Domain) -> Result<Prepared, SysfsError> {
    match domain.mechanism {
        Mechanism::Userspace => {
            let governor = domain
                .knobs
                .governor
                .expect("userspace domains have a governor");
            match w.value(domain.file(governor), "userspace") {
                Ok(()) => {}
                Err(e) if e.write_failure() == Some(WriteFailure::Invalid) => {
                    log::warn!(
                        "{}: the kernel refused the userspace governor ({e}); pinning min and max instead",
                        domain.id
                    );
                    return Ok(Prepared::Pinned);
                }
                Err(e) => return Err(e),
            }
            let min = domain.knobs.min.expect("userspace domains have a min file");
            let floor = domain.frequencies.lowest();
            let current = w.sysfs.read_freq(domain.file(min), domain.knobs.unit)?;
            if current > floor {
                log::info!(
                    "{}: lowering the floor from {current} to {floor} so decisions can go below it; it is restored on exit",
                    domain.id
                );
                w.freq(domain, min, floor)?;
            }
            Ok(Prepared::AsPlanned)
        }
        Mechanism::Pin => Ok(Prepared::AsPlanned),
        Mechanism::EmcLock => {
            let lock = domain.knobs.lock.expect("EMC has a lock file");
            w.value(domain.file(lock), "1")
                .map(|()| Prepared::AsPlanned)
        }
    }
}
