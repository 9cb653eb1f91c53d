//! Fixtures shared by the integration tests and the benchmark: Jetson Xavier NX-like
//! frequency domains and Dynamic-OFA sub-network libraries (FACTS §1, §4).
#![allow(dead_code)]

use dnngov_policy::{
    AppState, Caps, CpuSample, Devices, DomainKind, FreqDomain, Hz, Inference, Nanos, Snapshot,
    SubNetwork, Targets,
};

/// The Xavier NX GPU table (FACTS §4).
pub const GPU_HZ: [u64; 15] = [
    114_750_000,
    204_000_000,
    306_000_000,
    408_000_000,
    510_000_000,
    599_250_000,
    701_250_000,
    752_250_000,
    803_250_000,
    854_250_000,
    905_250_000,
    956_250_000,
    1_007_250_000,
    1_058_250_000,
    1_109_250_000,
];

/// Carmel CPU table: the published points (1190400 .. 1907200 kHz) plus lower entries in the
/// usual 76.8 MHz steps; the real table is read from sysfs at run time.
pub const CPU_KHZ: [u64; 20] = [
    115_200, 192_000, 268_800, 345_600, 422_400, 499_200, 576_000, 652_800, 729_600, 806_400,
    883_200, 960_000, 1_036_800, 1_190_400, 1_420_800, 1_497_600, 1_651_200, 1_728_000, 1_804_800,
    1_907_200,
];

/// EMC rates: an assumed ten-entry ladder up to 1866 MHz.
pub const EMC_MHZ: [u64; 10] = [204, 408, 533, 665, 800, 1065, 1331, 1600, 1728, 1866];

pub const GPU: u32 = 10;
pub const EMC: u32 = 20;

pub fn xavier_domains() -> Vec<FreqDomain> {
    let mut v: Vec<FreqDomain> = (0..3)
        .map(|c| {
            let table: Vec<Hz> = CPU_KHZ.iter().map(|k| Hz::from_khz(*k)).collect();
            FreqDomain {
                id: 2 * c,
                kind: DomainKind::Cpu,
                cur: *table.last().unwrap(),
                max_limit: *table.last().unwrap(),
                table,
                cpus: vec![2 * c, 2 * c + 1],
                busy: None,
            }
        })
        .collect();
    let gpu: Vec<Hz> = GPU_HZ.iter().map(|h| Hz(*h)).collect();
    v.push(FreqDomain {
        id: GPU,
        kind: DomainKind::Gpu,
        cur: *gpu.last().unwrap(),
        max_limit: *gpu.last().unwrap(),
        table: gpu,
        cpus: vec![],
        busy: Some(Nanos(0)),
    });
    let emc: Vec<Hz> = EMC_MHZ.iter().map(|m| Hz::from_mhz(*m)).collect();
    v.push(FreqDomain {
        id: EMC,
        kind: DomainKind::Memory,
        cur: *emc.last().unwrap(),
        max_limit: *emc.last().unwrap(),
        table: emc,
        cpus: vec![],
        busy: Some(Nanos(0)),
    });
    v
}

/// Dynamic-OFA `nets_6` on the Xavier NX GPU: (top-1 %, ms at full clocks).
pub const NETS_6: [(f64, f64); 6] = [
    (74.20, 41.16),
    (74.97, 45.42),
    (76.13, 49.44),
    (77.54, 51.08),
    (78.35, 56.75),
    (79.03, 61.73),
];

/// Dynamic-OFA `nets_7`.
pub const NETS_7: [(f64, f64); 7] = [
    (73.18, 37.53),
    (74.54, 41.49),
    (75.23, 45.36),
    (76.39, 47.32),
    (77.03, 48.14),
    (77.75, 51.32),
    (78.05, 59.10),
];

pub fn library(entries: &[(f64, f64)]) -> Vec<SubNetwork> {
    entries
        .iter()
        .map(|(acc, ms)| SubNetwork {
            accuracy: *acc,
            latency_full: Some(Nanos::from_millis_f64(*ms)),
            relative_cost: None,
        })
        .collect()
}

pub fn app(
    id: u32,
    lib: &[(f64, f64)],
    deadline_ms: f64,
    period_ms: f64,
    floor: f64,
    priority: u8,
    gpu: bool,
) -> AppState {
    AppState {
        id,
        library: library(lib),
        targets: Targets {
            deadline: Nanos::from_millis_f64(deadline_ms),
            period: Some(Nanos::from_millis_f64(period_ms)),
            accuracy_floor: floor,
            priority,
        },
        devices: Devices { cpu: true, gpu },
        cpu_domains: vec![],
        finished: vec![],
        running_since: None,
    }
}

pub fn snapshot(now_ms: u64, apps: Vec<AppState>) -> Snapshot {
    Snapshot {
        now: Nanos::from_millis(now_ms),
        domains: xavier_domains(),
        cpus: (0..6)
            .map(|cpu| CpuSample {
                cpu,
                online: true,
                busy: Nanos::from_millis(now_ms / 2),
            })
            .collect(),
        apps,
        power: None,
        caps: Caps::default(),
    }
}

/// [`snapshot`] with other programs using a tenth of each CPU rather than half. Each tick
/// reports its domains at their highest clocks whatever was decided, so half a CPU busy
/// reads as a demand that no plan may run a cluster under (see the manager's
/// `CPU_BUSY_UTIL`); tests of other rules use this light load to leave plans free of it.
pub fn quiet_snapshot(now_ms: u64, apps: Vec<AppState>) -> Snapshot {
    let mut s = snapshot(now_ms, apps);
    for c in &mut s.cpus {
        c.busy = Nanos::from_millis(now_ms / 10);
    }
    s
}

/// Reports every domain of `s` at the clock `d` decided, as the next tick of a real
/// machine would.
pub fn at_decided_clocks(s: &mut Snapshot, d: &dnngov_policy::Decision) {
    for dom in &mut s.domains {
        if let Some(x) = d.domains.iter().find(|x| x.domain == dom.id) {
            dom.cur = x.freq;
        }
    }
}

pub fn inference(end_ms: u64, latency_ms: f64, subnet: u32) -> Inference {
    Inference {
        end: Nanos::from_millis(end_ms),
        latency: Nanos::from_millis_f64(latency_ms),
        subnet,
    }
}

/// `n` apps of mixed kinds that fit together on the board, for scaling tests and benches.
pub fn mixed_apps(n: u32) -> Vec<AppState> {
    (0..n)
        .map(|i| {
            let gpu = i % 4 != 3;
            let lib: &[(f64, f64)] = if i % 2 == 0 { &NETS_6 } else { &NETS_7 };
            let mut a = app(
                i + 1,
                lib,
                150.0 + 10.0 * i as f64,
                600.0 + 150.0 * i as f64,
                74.0,
                (i % 3) as u8,
                gpu,
            );
            if !gpu {
                a.cpu_domains = vec![2 * (i % 3)];
            }
            a
        })
        .collect()
}

/// The optimiser's view of a snapshot with seeded (not yet learned) models, as the
/// manager builds it at an app's arrival.
pub fn problem(snap: &Snapshot) -> dnngov_policy::optimiser::Problem {
    use dnngov_policy::model::{LatencyCoefs, PowerModel};
    use dnngov_policy::optimiser::{AppProblem, DomainOption, Problem, SubnetOption};
    let ids: Vec<(u32, DomainKind)> = snap.domains.iter().map(|d| (d.id, d.kind)).collect();
    let power = PowerModel::seeded(&dnngov_policy::PlatformPower::default(), &ids, 0.99);
    Problem {
        domains: snap
            .domains
            .iter()
            .map(|d| {
                let allowed = snap.allowed_max(d);
                DomainOption {
                    id: d.id,
                    kind: d.kind,
                    freqs: d.table.iter().copied().filter(|f| *f <= allowed).collect(),
                    max_freq: d.max_freq(),
                    cpu_count: d.cpus.len(),
                    online_cpus: snap.online_cpus(d),
                    util: 0.1,
                    speed: d.cur.as_f64() / d.max_freq().as_f64(),
                }
            })
            .collect(),
        apps: snap
            .apps
            .iter()
            .map(|a| AppProblem {
                id: a.id,
                priority: a.targets.priority,
                deadline_ms: a.targets.deadline.as_millis_f64(),
                period_ms: a
                    .targets
                    .period
                    .unwrap_or(a.targets.deadline)
                    .as_millis_f64(),
                accuracy_floor: a.targets.accuracy_floor,
                devices: a.devices,
                cpu_domains: a.cpu_domains.clone(),
                spread_margin: 0.0,
                missing: false,
                cautious_device: false,
                subnets: a
                    .library
                    .iter()
                    .map(|s| SubnetOption {
                        accuracy: s.accuracy,
                        coefs: LatencyCoefs::seed(
                            s.latency_full.unwrap_or(Nanos(0)).as_millis_f64(),
                            a.devices,
                        ),
                        cautious: None,
                        declared_ms: s.latency_full.unwrap_or(Nanos(0)).as_millis_f64(),
                    })
                    .collect(),
            })
            .collect(),
        power: power.coefs(),
        power_cap: snap.caps.power,
    }
}
