//! Random scenarios from a seed: workloads nobody picked, to judge a policy on (see
//! [`crate::sweep`]). A generated scenario is an ordinary [`Scenario`]: `dnngov-sim
//! generate --seed N` writes it as a file that `compare` and `run` take like any other.
//!
//! The family, per scenario:
//! - 1 to 5 apps, each with a library of 3 to 10 entries: one of the Dynamic-OFA tables, or
//!   a synthetic Pareto front (fastest entry 5-60 ms at full clocks, slowest 1.3-2.5 times
//!   that, accuracy rising with diminishing returns); 2 to 30 frames/s; a deadline from
//!   tight (1.1 times what the fastest entry takes at full clocks, counting one GPU turn of
//!   every other app it may wait behind) to loose (3 times); an accuracy floor on about
//!   half of them; its own split of the latency over CPU, GPU and memory; sometimes a
//!   switch cost; later arrival or early departure for some.
//! - Frame rates scaled down (not below 2 frames/s) so the fastest entries of all apps
//!   together need at most 20-60 % (drawn) of the GPU at full clocks: the family is meant
//!   to be servable, with room for the events' GPU background; where it is not, the oracle
//!   says so.
//! - Per-frame latency jitter of 0 to 10 %, power-sensor noise of 0 to 5 %.
//! - 0 to 2 CPU background loads, steady or in bursts, up to 2.5 cores' worth, most of them
//!   starting and stopping mid-run.
//! - 0 to 4 events with a start and an end: a GPU background share, cores offline and back,
//!   a power cap, a GPU frequency cap; and deadline changes.
//!
//! Events start after 10 s (the policy's learning is not what they test) and end at least
//! 15 s before the end, so recovery can be judged.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::platform::{Kind, Platform};
use crate::rng::Rng;
use crate::scenario::{builtin_library, AppSpec, CpuLoad, Event, Scenario, Split};

/// What the generator needs to know of the board.
#[derive(Clone, Debug)]
pub struct Board {
    /// The platform file, as the scenario names it.
    pub path: String,
    /// CPU numbers.
    pub cpus: Vec<u32>,
    /// Name and highest frequency (MHz) of the GPU domain, if there is one.
    pub gpu: Option<(String, f64)>,
    /// Lowest and highest total power the board can draw, roughly (W).
    pub power_range: (f64, f64),
}

impl Board {
    pub fn of(plat: &Platform, path: &str) -> Board {
        let mut cpus: Vec<u32> = plat
            .domains
            .iter()
            .filter(|d| d.kind == Kind::Cpu)
            .flat_map(|d| d.cpus.iter().copied())
            .collect();
        cpus.sort();
        let gpu = plat
            .domains
            .iter()
            .find(|d| d.kind == Kind::Gpu)
            .map(|d| (d.name.clone(), d.max_hz().as_f64() / 1e6));
        let busy: f64 = plat
            .domains
            .iter()
            .map(|d| d.power_w(d.max_hz(), &vec![1.0; d.cpus.len().max(1)]))
            .sum();
        Board {
            path: path.to_string(),
            cpus,
            gpu,
            power_range: (plat.base_power_w, plat.base_power_w + busy),
        }
    }
}

struct Draw(Rng);

impl Draw {
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.unit()
    }
    /// An integer in `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        (lo + (self.0.unit() * (hi - lo + 1) as f64) as usize).min(hi)
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.unit() < p
    }
    /// Rounded to `digits` decimals, so the written file reads well.
    fn round(x: f64, digits: i32) -> f64 {
        let k = 10f64.powi(digits);
        (x * k).round() / k
    }
}

/// A synthetic Pareto front: `n` entries, latency rising from `fastest`, accuracy rising
/// with diminishing returns.
fn synthetic_library(d: &mut Draw, n: usize, fastest: f64) -> Vec<(f64, f64)> {
    let slowest = fastest * d.uniform(1.3, 2.5);
    let acc_lo = d.uniform(60.0, 76.0);
    let acc_span = d.uniform(3.0, 9.0);
    (0..n)
        .map(|i| {
            let x = i as f64 / (n - 1) as f64;
            let lat = fastest + (slowest - fastest) * x;
            let acc = acc_lo + acc_span * (1.0 - (1.0 - x).powi(2));
            (Draw::round(acc, 2), Draw::round(lat, 2))
        })
        .collect()
}

fn app(d: &mut Draw, i: usize, duration_s: f64) -> AppSpec {
    let (library, subnets, lib) = match d.int(0, 3) {
        0 => {
            let name = if d.chance(0.5) {
                "dynamic-ofa-6"
            } else {
                "dynamic-ofa-7"
            };
            let lib = builtin_library(name).expect("built in");
            (Some(name.to_string()), None, lib)
        }
        _ => {
            let n = d.int(3, 10);
            let fastest = d.uniform(5.0, 60.0);
            let lib = synthetic_library(d, n, fastest);
            (None, Some(lib.clone()), lib)
        }
    };
    let fastest = lib.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    // A frame rate the fastest entry can keep up with at full clocks, with a margin.
    let fps_max = (1000.0 / (fastest * 1.25)).min(30.0);
    let fps = Draw::round(d.uniform(2.0, fps_max.max(2.0)), 1);
    // Drawn as a factor here; made absolute once every app is known (see `generate`).
    let deadline_ms = d.uniform(1.1, 3.0);
    let accuracy_floor = if d.chance(0.5) {
        // The accuracy of an entry in the lower two thirds: a floor that leaves choice.
        let k = d.int(0, (lib.len() * 2 / 3).saturating_sub(1));
        lib[k].0
    } else {
        0.0
    };
    let (gpu, cpu, mem, fixed) = (
        d.uniform(0.4, 0.85),
        d.uniform(0.05, 0.3),
        d.uniform(0.05, 0.2),
        d.uniform(0.02, 0.08),
    );
    let sum = gpu + cpu + mem + fixed;
    let gpu = Draw::round(gpu / sum, 3);
    let cpu = Draw::round(cpu / sum, 3);
    let mem = Draw::round(mem / sum, 3);
    let split = Split {
        gpu,
        cpu,
        mem,
        fixed: Draw::round(1.0 - gpu - cpu - mem, 3),
    };
    let start_s = if i > 0 && d.chance(0.3) {
        Draw::round(d.uniform(0.1, 0.5) * duration_s, 1)
    } else {
        0.0
    };
    let stop_s = (d.chance(0.2)).then(|| Draw::round(d.uniform(0.6, 0.85) * duration_s, 1));
    AppSpec {
        name: format!("app{i}"),
        library,
        subnets,
        fps,
        deadline_ms,
        accuracy_floor,
        priority: 0,
        start_s,
        stop_s,
        split,
        switch_cost_ms: if d.chance(0.3) {
            Draw::round(d.uniform(1.0, 30.0), 1)
        } else {
            0.0
        },
        queue_depth: 2,
        spin_wait: true,
    }
}

/// The latency of an app's fastest entry at full clocks, in ms.
fn fastest_ms(a: &AppSpec) -> f64 {
    a.library()
        .expect("generated")
        .iter()
        .map(|e| e.1)
        .fold(f64::INFINITY, f64::min)
}

/// A window `[from, to)` for an event: starts after 10 s, ends 15 s before the end at the
/// latest, lasts at least 5 s.
fn window(d: &mut Draw, duration_s: f64) -> (f64, f64) {
    let latest_end = duration_s - 15.0;
    let from = d.uniform(10.0, (latest_end - 5.0).max(10.0));
    let to = d.uniform(from + 5.0, latest_end.max(from + 5.0));
    (Draw::round(from, 1), Draw::round(to, 1))
}

/// The scenario of `seed`, `duration_s` long, on `board`.
pub fn generate(seed: u64, duration_s: f64, board: &Board) -> Scenario {
    let mut d = Draw(Rng::keyed(seed, 0x6e9e, 0));
    let n_apps = d.int(1, 5);
    let mut apps: Vec<AppSpec> = (0..n_apps).map(|i| app(&mut d, i, duration_s)).collect();
    // GPU time of each app's fastest entry at full clocks (its GPU and memory-bound parts).
    let gpu_ms: Vec<f64> = apps
        .iter()
        .map(|a| fastest_ms(a) * (a.split.gpu + a.split.mem))
        .collect();
    // The fastest entries of all apps together take at most this share of the GPU at full
    // clocks, so the scenario can be served, with room for the events' GPU background.
    let ceiling = d.uniform(0.2, 0.6);
    let load: f64 = apps
        .iter()
        .zip(&gpu_ms)
        .map(|(a, g)| g * a.fps / 1000.0)
        .sum();
    if load > ceiling {
        for a in &mut apps {
            a.fps = Draw::round((a.fps * ceiling / load).max(2.0), 1);
        }
    }
    // Deadlines: the drawn factor times the fastest entry's latency at full clocks plus,
    // when other apps share the GPU, one GPU turn of each (what a frame may wait behind).
    let fastest: Vec<f64> = apps.iter().map(fastest_ms).collect();
    let turns: f64 = gpu_ms.iter().sum();
    for (i, a) in apps.iter_mut().enumerate() {
        let alone = fastest[i] + (turns - gpu_ms[i]);
        a.deadline_ms = Draw::round(a.deadline_ms * alone, 1);
    }
    let latency_jitter = Draw::round(d.uniform(0.0, 0.10), 3);
    let sensor_noise = Draw::round(d.uniform(0.0, 0.05), 3);
    let mut cpu_loads = Vec::new();
    for _ in 0..d.int(0, 2) {
        let cores = d.uniform(0.2, 2.5);
        let work_ms = Draw::round(d.uniform(1.0, 5.0), 1);
        let bursty = d.chance(0.4);
        let (on_s, off_s) = if bursty {
            let on = Draw::round(d.uniform(0.2, 1.0), 2);
            (Some(on), Draw::round(d.uniform(1.0, 4.0), 2))
        } else {
            (None, 0.0)
        };
        let rate_hz = Draw::round(cores * 1000.0 / work_ms, 1);
        let (start_s, end_s) = if d.chance(0.75) {
            let (a, b) = window(&mut d, duration_s);
            (a, Some(b))
        } else {
            (0.0, None)
        };
        cpu_loads.push(CpuLoad {
            rate_hz,
            work_ms,
            on_s,
            off_s,
            start_s,
            end_s,
        });
    }
    let mut events: Vec<Event> = Vec::new();
    for _ in 0..d.int(0, 4) {
        let (from, to) = window(&mut d, duration_s);
        let (on, off) = match d.int(0, 4) {
            0 => (
                Event {
                    gpu_background_share: Some(Draw::round(d.uniform(0.1, 0.5), 2)),
                    ..Event::default()
                },
                Event {
                    gpu_background_share: Some(0.0),
                    ..Event::default()
                },
            ),
            1 => {
                // Between one and all but two CPUs go offline (never CPU 0, as on Linux).
                let others: Vec<u32> = board.cpus.iter().copied().filter(|c| *c != 0).collect();
                let n = d.int(1, others.len().saturating_sub(1).max(1));
                let mut off: Vec<u32> = Vec::new();
                while off.len() < n.min(others.len()) {
                    let c = others[d.int(0, others.len() - 1)];
                    if !off.contains(&c) {
                        off.push(c);
                    }
                }
                off.sort();
                (
                    Event {
                        offline_cpus: Some(off),
                        ..Event::default()
                    },
                    Event {
                        offline_cpus: Some(Vec::new()),
                        ..Event::default()
                    },
                )
            }
            2 => {
                let (lo, hi) = board.power_range;
                let cap = Draw::round(lo + (hi - lo) * d.uniform(0.25, 0.6), 1);
                (
                    Event {
                        power_cap_w: Some(cap),
                        ..Event::default()
                    },
                    Event {
                        power_cap_w: Some(0.0),
                        ..Event::default()
                    },
                )
            }
            3 if board.gpu.is_some() => {
                let (name, max) = board.gpu.clone().expect("checked");
                let cap = Draw::round(max * d.uniform(0.4, 0.8), 0);
                (
                    Event {
                        max_mhz: Some(BTreeMap::from([(name.clone(), cap)])),
                        ..Event::default()
                    },
                    Event {
                        max_mhz: Some(BTreeMap::from([(name, 0.0)])),
                        ..Event::default()
                    },
                )
            }
            _ => {
                // A deadline change of one app, tighter or looser, and back.
                let i = d.int(0, apps.len() - 1);
                let a = &apps[i];
                let new = Draw::round(
                    (a.deadline_ms * d.uniform(0.7, 1.6)).max(fastest[i] * 1.1 + turns - gpu_ms[i]),
                    1,
                );
                (
                    Event {
                        app: Some(a.name.clone()),
                        deadline_ms: Some(new),
                        ..Event::default()
                    },
                    Event {
                        app: Some(a.name.clone()),
                        deadline_ms: Some(a.deadline_ms),
                        ..Event::default()
                    },
                )
            }
        };
        events.push(Event { at_s: from, ..on });
        events.push(Event { at_s: to, ..off });
    }
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Scenario {
        name: format!("G{seed}"),
        description: format!("generated from seed {seed}"),
        platform: board.path.clone(),
        duration_s,
        tick_ms: 10.0,
        step_ms: 1.0,
        latency_jitter,
        sensor_noise: Some(sensor_noise),
        apps,
        cpu_loads,
        events,
        dir: Path::new(".").to_path_buf(),
    }
}

/// The scenario as a file: a comment saying where it came from, then TOML that
/// [`Scenario::parse`] reads back to the same scenario.
pub fn to_toml(scn: &Scenario, seed: u64) -> Result<String> {
    let body = toml::to_string(scn)?;
    Ok(format!(
        "# Generated by `dnngov-sim generate --seed {seed} --duration {}`.\n{body}",
        scn.duration_s
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> Board {
        Board {
            path: "x.toml".into(),
            cpus: vec![0, 1, 2, 3, 4, 5],
            gpu: Some(("gpu".into(), 1109.25)),
            power_range: (2.2, 20.0),
        }
    }

    #[test]
    fn generated_scenarios_are_valid_and_read_back_the_same() {
        for seed in 0..200 {
            let s = generate(seed, 120.0, &board());
            let text = to_toml(&s, seed).unwrap();
            let back = Scenario::parse(&text, Path::new("."))
                .unwrap_or_else(|e| panic!("seed {seed}: {e:#}\n{text}"));
            assert_eq!(
                toml::to_string(&back).unwrap(),
                toml::to_string(&s).unwrap()
            );
            assert!((1..=5).contains(&s.apps.len()), "seed {seed}");
            for a in &s.apps {
                let n = a.library().unwrap().len();
                assert!((3..=10).contains(&n), "seed {seed}: {n} entries");
                assert!(a.fps >= 2.0 && a.fps <= 30.0, "seed {seed}: {} fps", a.fps);
            }
            assert!(s.latency_jitter <= 0.10);
        }
    }

    #[test]
    fn the_family_covers_what_it_claims() {
        let all: Vec<Scenario> = (0..200).map(|s| generate(s, 120.0, &board())).collect();
        let any = |f: &dyn Fn(&Scenario) -> bool| all.iter().any(f);
        assert!(any(&|s| s.apps.len() == 5));
        assert!(any(&|s| s.apps.len() == 1));
        assert!(any(&|s| s.apps.iter().any(|a| a.stop_s.is_some())));
        assert!(any(&|s| s.apps.iter().any(|a| a.start_s > 0.0)));
        assert!(any(&|s| s.apps.iter().any(|a| a.library.is_some())));
        assert!(any(&|s| s.apps.iter().any(|a| a.subnets.is_some())));
        assert!(any(&|s| s.cpu_loads.iter().any(|l| l.on_s.is_some())));
        assert!(any(&|s| s.cpu_loads.iter().any(|l| l.end_s.is_some())));
        for pick in [
            |e: &Event| e.gpu_background_share.is_some(),
            |e: &Event| e.offline_cpus.is_some(),
            |e: &Event| e.power_cap_w.is_some(),
            |e: &Event| e.max_mhz.is_some(),
            |e: &Event| e.deadline_ms.is_some(),
        ] {
            assert!(any(&|s| s.events.iter().any(pick)));
        }
        // Different seeds, different scenarios; the same seed, the same one.
        assert_ne!(to_toml(&all[1], 1).unwrap(), to_toml(&all[2], 1).unwrap());
        assert_eq!(
            to_toml(&generate(7, 120.0, &board()), 7).unwrap(),
            to_toml(&all[7], 7).unwrap()
        );
    }
}
