use super::*;
use proptest::prelude::*;

fn measurement(
    candidate: &str,
    accuracy: f64,
    gpu_mhz: u64,
    latency: f64,
    energy: Option<f64>,
) -> Measurement {
    Measurement {
        candidate: candidate.into(),
        accuracy_pct: accuracy,
        relative_cost: None,
        setting: Setting {
            cpu_hz: None,
            gpu_hz: Some(gpu_mhz * 1_000_000),
            mem_hz: None,
        },
        latency_ms: latency,
        latency_p90_ms: latency + 2.0,
        energy_mj: energy,
        energy_estimated: false,
        modelled: false,
        samples: 20,
    }
}

#[test]
fn dominated_candidates_are_left_out_and_the_rest_ordered_by_accuracy() {
    let measurements = vec![
        // "big": most accurate; least energy at the middle setting.
        measurement("big", 79.0, 300, 90.0, Some(400.0)),
        measurement("big", 79.0, 600, 50.0, Some(300.0)),
        measurement("big", 79.0, 1100, 30.0, Some(330.0)),
        // "small": least accurate and cheapest.
        measurement("small", 70.0, 300, 40.0, Some(120.0)),
        measurement("small", 70.0, 1100, 12.0, Some(150.0)),
        // "bloated": less accurate than "big" and costlier: dominated.
        measurement("bloated", 75.0, 300, 95.0, Some(500.0)),
        measurement("bloated", 75.0, 1100, 33.0, Some(320.0)),
        // "mid": in between on both.
        measurement("mid", 74.0, 600, 25.0, Some(200.0)),
        measurement("mid", 74.0, 1100, 20.0, Some(210.0)),
    ];
    let library = pareto_library(&measurements, 8);
    let names: Vec<&str> = library.iter().map(|e| e.subnet.name.as_str()).collect();
    assert_eq!(names, ["small", "mid", "big"]);
    // Ids are the order of first appearance; latency is the one at the highest setting.
    assert_eq!(library[2].subnet.id, 0);
    assert_eq!(library[0].subnet.id, 1);
    assert_eq!(library[1].subnet.id, 3);
    assert_eq!(library[2].subnet.latency_ms, Some(30.0));
    assert_eq!(library[2].cost, Cost::EnergyMj(300.0));
    assert_eq!(library[2].best_setting.gpu_hz, Some(600_000_000));
    let subnets: Vec<Subnet> = library.into_iter().map(|e| e.subnet).collect();
    validate_subnets(&subnets).unwrap();
}

#[test]
fn without_energy_for_every_candidate_latency_at_full_clocks_is_the_cost() {
    let measurements = vec![
        measurement("a", 70.0, 300, 40.0, Some(10.0)),
        measurement("a", 70.0, 1100, 12.0, None),
        measurement("b", 75.0, 300, 80.0, None),
        measurement("b", 75.0, 1100, 10.0, None),
    ];
    let library = pareto_library(&measurements, 8);
    // "b" is faster at full clocks and more accurate: "a" is dominated.
    assert_eq!(library.len(), 1);
    assert_eq!(library[0].subnet.name, "b");
    assert_eq!(library[0].cost, Cost::LatencyMs(10.0));
    assert_eq!(library[0].best_setting.gpu_hz, Some(1_100_000_000));
}

#[test]
fn thinning_keeps_both_ends_and_spreads_the_rest() {
    // 20 points of accuracy 60, 61, ..., 79; keep 5: 60, then nearest 64.75, 69.5, 74.25, 79.
    let picked = thin(20, 5, |i| 60.0 + i as f64);
    assert_eq!(picked, [0, 5, 9, 14, 19]);
    // Clustered accuracies: still unique, still both ends.
    let accuracy = [70.0, 70.1, 70.2, 70.3, 70.4, 79.0];
    let picked = thin(accuracy.len(), 4, |i| accuracy[i]);
    assert_eq!(picked.len(), 4);
    assert_eq!(picked[0], 0);
    assert_eq!(picked[3], 5);
    assert_eq!(thin(3, 1, |i| i as f64), [2]);
    assert!(thin(3, 0, |i| i as f64).is_empty());
}

#[test]
fn unusable_measurements_and_names_are_handled() {
    let long = "x".repeat(100);
    let measurements = vec![
        measurement(&long, 72.0, 600, 20.0, Some(50.0)),
        measurement("nan", f64::NAN, 600, 20.0, Some(1.0)),
        measurement("bad\u{7}name", 78.0, 600, 30.0, Some(80.0)),
        measurement("negative-latency", 99.0, 600, -1.0, Some(1.0)),
    ];
    let library = pareto_library(&measurements, 8);
    assert_eq!(library.len(), 2);
    assert_eq!(library[0].subnet.name.len(), MAX_NAME_BYTES);
    assert_eq!(library[1].subnet.name, "bad?name");
    let subnets: Vec<Subnet> = library.into_iter().map(|e| e.subnet).collect();
    validate_subnets(&subnets).unwrap();
    assert!(pareto_library(&[], 8).is_empty());
}

#[test]
fn modelled_settings_fill_in_what_was_not_measured() {
    let measured = vec![Measurement {
        setting: Setting::default(),
        ..measurement("a", 70.0, 0, 10.0, Some(20.0))
    }];
    let settings = [
        Setting::default(),
        Setting {
            gpu_hz: Some(300_000_000),
            ..Setting::default()
        },
        Setting {
            gpu_hz: Some(600_000_000),
            ..Setting::default()
        },
    ];
    let all = model_other_settings(&measured, &settings, &mut |reference, setting| {
        let hz = setting.gpu_hz? as f64;
        Some(Modelled {
            latency_ms: reference.latency_ms * 1.1e9 / hz,
            latency_p90_ms: reference.latency_p90_ms * 1.1e9 / hz,
            energy_mj: None,
        })
    });
    assert_eq!(all.len(), 3);
    assert!(!all[0].modelled);
    assert!(all[1].modelled && all[2].modelled);
    assert_eq!(all[1].samples, 0);
    assert!((all[2].latency_ms - 10.0 * 1.1e9 / 6e8).abs() < 1e-9);
}

fn sample_profile() -> Profile {
    let measurements = vec![
        measurement("small", 70.0, 300, 40.0, Some(120.0)),
        measurement("small", 70.0, 1100, 12.0, Some(150.0)),
        measurement("big", 79.0, 300, 90.0, Some(400.0)),
        measurement("big", 79.0, 1100, 30.0, Some(330.0)),
    ];
    Profile::new("classifier", "test board", measurements, 8)
}

#[test]
fn a_profile_round_trips_through_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("classifier.profile.json");
    let mut profile = sample_profile();
    assert_eq!(profile.library.len(), 2);
    profile.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"format_version\": 1"), "{text}");
    assert!(
        !text.contains("workload"),
        "none recorded, none written: {text}"
    );
    assert_eq!(Profile::load(&path).unwrap(), profile);
    profile
        .workload
        .insert("batch".into(), serde_json::json!(8));
    profile.save(&path).unwrap();
    let loaded = Profile::load(&path).unwrap();
    assert_eq!(loaded.workload.get("batch"), Some(&serde_json::json!(8)));
    assert_eq!(loaded, profile);

    let target = Target {
        deadline_ms: 50.0,
        period_ms: None,
        accuracy_floor_pct: None,
        priority: 0,
    };
    let spec =
        AppSpec::from_profile(&profile, "classifier", target.clone(), vec![Device::Gpu]).unwrap();
    assert_eq!(spec.subnets, profile.library);
    let empty = Profile {
        library: Vec::new(),
        ..profile
    };
    let error = AppSpec::from_profile(&empty, "classifier", target, vec![Device::Gpu]).unwrap_err();
    assert!(error.to_string().contains("empty library"), "{error}");
}

#[test]
fn errors_name_the_file_and_the_field() {
    let path = Path::new("/profiles/classifier.json");
    let good = serde_json::to_string_pretty(&sample_profile()).unwrap();
    let error_of = |text: &str| Profile::from_json(text, path).unwrap_err().to_string();

    let wrong_type = good.replacen("\"latency_ms\": 12.0", "\"latency_ms\": \"fast\"", 1);
    let error = error_of(&wrong_type);
    assert!(
        error.starts_with("/profiles/classifier.json: measurements[1].latency_ms: "),
        "{error}"
    );

    let unknown = good.replacen(
        "\"gpu_hz\": 300000000",
        "\"gpu_hz\": 300000000, \"npu_hz\": 1",
        1,
    );
    let error = error_of(&unknown);
    assert!(
        error.contains("measurements[0].setting.npu_hz: unknown field `npu_hz`"),
        "{error}"
    );

    let missing = good.replacen("\"samples\": 20", "\"samplez\": 20", 1);
    let error = error_of(&missing);
    assert!(error.contains("measurements[0]"), "{error}");
    assert!(error.contains("samplez"), "{error}");

    let version = good.replacen("\"format_version\": 1", "\"format_version\": 7", 1);
    let error = error_of(&version);
    assert!(error.contains("format_version is 7"), "{error}");

    let unordered = {
        let mut p = sample_profile();
        p.library.reverse();
        serde_json::to_string(&p).unwrap()
    };
    let error = error_of(&unordered);
    assert!(error.contains("classifier.json: library: "), "{error}");
    assert!(error.contains("least to most accurate"), "{error}");

    let bad_accuracy = good.replacen("\"accuracy_pct\": 70.0", "\"accuracy_pct\": 170.0", 1);
    let error = error_of(&bad_accuracy);
    assert!(
        error.contains("measurements[0].accuracy_pct: is 170"),
        "{error}"
    );

    let error = Profile::load(Path::new("/nonexistent/profile.json"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("/nonexistent/profile.json: "), "{error}");
}

#[test]
fn sweep_without_an_agent_measures_the_current_clocks_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SweepOptions {
        admin_socket: dir.path().join("admin.sock"),
        warmup: 1,
        inferences: 3,
        ..SweepOptions::default()
    };
    let candidates = vec![
        CandidateInfo {
            name: "fast".into(),
            accuracy_pct: 70.0,
            relative_cost: Some(0.5),
        },
        CandidateInfo {
            name: "slow".into(),
            accuracy_pct: 75.0,
            relative_cost: None,
        },
    ];
    let settings = [Setting {
        gpu_hz: Some(600_000_000),
        ..Setting::default()
    }];
    let mut runs = [0u32; 2];
    let mut run_one = |index: usize| -> anyhow::Result<()> {
        runs[index] += 1;
        std::thread::sleep(Duration::from_millis(1 + 2 * index as u64));
        Ok(())
    };
    let measured = sweep(&opts, &candidates, &settings, &mut run_one).unwrap();
    // Three rounds of one timed inference, each after an untimed one.
    assert_eq!(runs, [6, 6]);
    assert_eq!(measured.len(), 2);
    for (m, c) in measured.iter().zip(&candidates) {
        assert_eq!(m.candidate, c.name);
        assert_eq!(m.setting, Setting::default());
        assert!(!m.modelled);
        assert_eq!(m.samples, 3);
        assert_eq!(m.energy_mj, None);
        assert!(m.latency_p90_ms >= m.latency_ms);
    }
    assert!(measured[1].latency_ms > measured[0].latency_ms);

    let mut failing = |_: usize| -> anyhow::Result<()> { anyhow::bail!("the model is not loaded") };
    let error = sweep(&opts, &candidates, &settings, &mut failing).unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("\"fast\"") && text.contains("the model is not loaded"),
        "{text}"
    );
}

#[test]
fn a_load_that_stops_during_a_sweep_shifts_every_candidate_alike() {
    // Two candidates: the more accurate takes 12 ms, the other 8 ms. Another program slows
    // every inference by 20 ms for the first third of the sweep's inferences. Timed one
    // candidate after the other, the first would take all of it and look the slower (and
    // the library would keep only the more accurate); in rounds both take their part and
    // the order holds.
    let dir = tempfile::tempdir().unwrap();
    let opts = SweepOptions {
        admin_socket: dir.path().join("admin.sock"),
        warmup: 1,
        inferences: 8,
        ..SweepOptions::default()
    };
    let candidates = vec![
        CandidateInfo {
            name: "small".into(),
            accuracy_pct: 70.0,
            relative_cost: Some(0.5),
        },
        CandidateInfo {
            name: "large".into(),
            accuracy_pct: 75.0,
            relative_cost: Some(1.0),
        },
    ];
    // warmup 1 + 8 timed + 3 more untimed, for each of the two.
    let total = 2 * (1 + 8 + 3);
    let mut calls = 0;
    let mut run_one = |index: usize| -> anyhow::Result<()> {
        let loaded = calls * 3 < total;
        calls += 1;
        let ms = [8, 12][index] + if loaded { 20 } else { 0 };
        std::thread::sleep(Duration::from_millis(ms));
        Ok(())
    };
    let measured = sweep(&opts, &candidates, &[], &mut run_one).unwrap();
    assert_eq!(calls, total);
    assert!(
        measured[0].latency_ms < measured[1].latency_ms,
        "{measured:#?}"
    );
    // Both stay in the library: the less accurate one is the cheaper.
    let names: Vec<String> = pareto_library(&measured, 8)
        .into_iter()
        .map(|e| e.subnet.name)
        .collect();
    assert_eq!(names, ["small", "large"]);
}

/// Candidates with one accuracy each and random measurements at a few settings.
fn measurements_strategy() -> impl Strategy<Value = Vec<Measurement>> {
    let candidate = (0.0f64..100.0, prop::option::of(0.1f64..10.0));
    prop::collection::vec(candidate, 1..14).prop_flat_map(|candidates| {
        let n = candidates.len();
        let one = (
            0..n,
            0u64..4,
            0.1f64..200.0,
            prop::option::of(0.1f64..1000.0),
            any::<bool>(),
        );
        prop::collection::vec(one, 1..40).prop_map(move |rows| {
            rows.into_iter()
                .map(|(c, step, latency, energy, modelled)| Measurement {
                    candidate: format!("c{c}"),
                    accuracy_pct: candidates[c].0,
                    relative_cost: candidates[c].1,
                    setting: Setting {
                        cpu_hz: Some(1_000_000_000 + step * 100_000_000),
                        gpu_hz: Some(300_000_000 * (step + 1)),
                        mem_hz: None,
                    },
                    latency_ms: latency,
                    latency_p90_ms: latency * 1.2,
                    energy_mj: energy,
                    energy_estimated: false,
                    modelled,
                    samples: if modelled { 0 } else { 10 },
                })
                .collect()
        })
    })
}

/// Each candidate's accuracy and cost, computed independently of `pareto_library`.
fn costs(measurements: &[Measurement]) -> Vec<(String, f64, f64)> {
    let mut names: Vec<&str> = measurements.iter().map(|m| m.candidate.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let by_energy = names.iter().all(|n| {
        measurements
            .iter()
            .any(|m| m.candidate == *n && m.energy_mj.is_some())
    });
    names
        .iter()
        .map(|n| {
            let ms: Vec<&Measurement> = measurements.iter().filter(|m| m.candidate == *n).collect();
            let cost = if by_energy {
                ms.iter()
                    .filter_map(|m| m.energy_mj)
                    .fold(f64::INFINITY, f64::min)
            } else {
                // The highest setting here: the largest GPU clock; measured before
                // modelled, then the lowest latency.
                let top = ms.iter().map(|m| m.setting.gpu_hz).max().unwrap();
                let at_top: Vec<&&Measurement> =
                    ms.iter().filter(|m| m.setting.gpu_hz == top).collect();
                let measured = at_top.iter().any(|m| !m.modelled);
                at_top
                    .iter()
                    .filter(|m| !measured || !m.modelled)
                    .map(|m| m.latency_ms)
                    .fold(f64::INFINITY, f64::min)
            };
            (n.to_string(), ms[0].accuracy_pct, cost)
        })
        .collect()
}

proptest! {
    #[test]
    fn the_library_is_a_thinned_pareto_front(measurements in measurements_strategy(), max in 0usize..12) {
        let library = pareto_library(&measurements, max);
        let all = costs(&measurements);
        prop_assert!(library.len() <= max.min(MAX_LIBRARY_ENTRIES));
        if max > 0 {
            prop_assert!(!library.is_empty());
        }
        // Ordered: accuracy non-decreasing, cost strictly increasing.
        for pair in library.windows(2) {
            prop_assert!(pair[0].subnet.accuracy_pct <= pair[1].subnet.accuracy_pct);
            prop_assert!(pair[0].cost.value() < pair[1].cost.value());
        }
        // Not dominated by any candidate.
        for entry in &library {
            let (accuracy, cost) = (entry.subnet.accuracy_pct, entry.cost.value());
            let (name, _, own) = all.iter().find(|(n, _, _)| *n == entry.subnet.name).unwrap();
            prop_assert_eq!(*own, cost, "{}", name);
            for (other, a, c) in &all {
                let dominates = *a >= accuracy && *c <= cost && (*a > accuracy || *c < cost);
                prop_assert!(!dominates, "{} dominates {}", other, entry.subnet.name);
            }
        }
        // Ends kept: the most accurate candidate's accuracy, and (with room for two) the
        // least cost of all.
        if let Some(last) = library.last() {
            let top = all.iter().map(|(_, a, _)| *a).fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(last.subnet.accuracy_pct, top);
        }
        if max >= 2 {
            let cheapest = all.iter().map(|(_, _, c)| *c).fold(f64::INFINITY, f64::min);
            prop_assert_eq!(library[0].cost.value(), cheapest);
        }
        // Unique ids, and a valid library for the protocol.
        let mut ids: Vec<u32> = library.iter().map(|e| e.subnet.id).collect();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), library.len());
        if !library.is_empty() {
            let subnets: Vec<Subnet> = library.iter().map(|e| e.subnet.clone()).collect();
            prop_assert!(validate_subnets(&subnets).is_ok());
        }
    }
}

proptest! {
    #[test]
    fn measured_figures_read_back_exactly(x in 0.0f64..1e6) {
        let figure = micro(x);
        let text = serde_json::to_string(&figure).unwrap();
        prop_assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), figure);
    }
}
