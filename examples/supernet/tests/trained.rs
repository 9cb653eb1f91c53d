//! Behaviour of a super-network after the tiny training run: it saves and loads back exactly,
//! it has learnt something, every candidate carries its own normalisation statistics, and
//! switching candidates needs neither the file nor a recalibration.

use std::sync::LazyLock;

use candle_core::{Device, Tensor};
use dnngov_supernet::dataset::{Dataset, Split};
use dnngov_supernet::latency;
use dnngov_supernet::train::{self, TrainConfig, TrainReport};
use dnngov_supernet::SuperNet;

/// One tiny training run shared by every test in this file.
struct Trained {
    /// The saved weights file's bytes.
    bytes: Vec<u8>,
    report: TrainReport,
    /// Logits of every candidate for the first test images, from the in-memory network.
    logits: Vec<Vec<Vec<f32>>>,
}

const PROBE_IMAGES: usize = 8;

static TRAINED: LazyLock<Trained> = LazyLock::new(|| {
    let cfg = TrainConfig::tiny();
    let (mut net, report) = train::train_supernet(&cfg, &Device::Cpu).expect("tiny training");
    let test = Dataset::generate(&cfg.dataset, Split::Test).unwrap();
    let (x, _) = test
        .batch(&(0..PROBE_IMAGES).collect::<Vec<_>>(), &Device::Cpu)
        .unwrap();
    let mut logits = Vec::new();
    for i in 0..net.candidates().len() {
        net.set_subnet_index(i).unwrap();
        logits.push(net.forward(&x).unwrap().to_vec2::<f32>().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    net.save(&path).expect("save");
    Trained {
        bytes: std::fs::read(&path).unwrap(),
        report,
        logits,
    }
});

/// Writes the trained weights to a fresh temporary file.
fn weights_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    std::fs::write(&path, &TRAINED.bytes).unwrap();
    (dir, path)
}

fn probe_images(net: &SuperNet) -> Tensor {
    let ds = net.provenance().dataset.clone().expect("data set recorded");
    let test = Dataset::generate(&ds, Split::Test).unwrap();
    test.batch(&(0..PROBE_IMAGES).collect::<Vec<_>>(), net.device())
        .unwrap()
        .0
}

#[test]
fn tiny_training_writes_weights_that_load_back_with_identical_logits() {
    let (_dir, path) = weights_file();
    let mut net = SuperNet::load(&path, &Device::Cpu).expect("load");
    let x = probe_images(&net);
    assert_eq!(net.candidates().len(), TRAINED.logits.len());
    for (i, want) in TRAINED.logits.iter().enumerate() {
        net.set_subnet_index(i).unwrap();
        let got = net.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(
            &got,
            want,
            "candidate {} differs after load",
            net.active().name
        );
    }
}

#[test]
fn largest_subnet_beats_chance_after_tiny_training() {
    let (name, top1) = TRAINED.report.top1.last().unwrap();
    // Ten balanced classes: chance is 10 %.
    assert!(*top1 >= 0.3, "largest sub-network {name}: top-1 {top1}");
    // The stored figure is what the loaded network really scores on the held-out split.
    let (_dir, path) = weights_file();
    let mut net = SuperNet::load(&path, &Device::Cpu).unwrap();
    let test = Dataset::generate(&net.provenance().dataset.clone().unwrap(), Split::Test).unwrap();
    let last = net.candidates().len() - 1;
    net.set_subnet_index(last).unwrap();
    let again = train::top1(&net, &test, 128).unwrap();
    assert_eq!(Some(again), net.candidates()[last].top1);
}

#[test]
fn manifest_gives_names_macs_and_accuracy_without_loading_tensors() {
    let (_dir, path) = weights_file();
    let m = SuperNet::read_manifest(&path).unwrap();
    assert_eq!(m.candidates.len(), TRAINED.report.top1.len());
    for (c, (name, top1)) in m.candidates.iter().zip(&TRAINED.report.top1) {
        assert_eq!(&c.name, name);
        assert_eq!(c.top1, Some(*top1));
        assert_eq!(c.macs, m.arch.macs(&c.config));
    }
    assert!(m.candidates.windows(2).all(|p| p[0].macs <= p[1].macs));
    assert_eq!(m.candidates.last().unwrap().relative_macs, 1.0);
    assert!(m.candidates[0].relative_macs > 0.0 && m.candidates[0].relative_macs < 1.0);
    let training = m.provenance.training.expect("training run recorded");
    assert_eq!(training.method, "sandwich");
    assert_eq!(training.steps, TRAINED.report.steps);
}

#[test]
fn switching_subnet_needs_no_reload_and_keeps_output_shape() {
    let (dir, path) = weights_file();
    let mut net = SuperNet::load(&path, &Device::Cpu).unwrap();
    let x = probe_images(&net);
    // Without the file, any switch that went back to disk would fail.
    drop(dir);
    assert!(!path.exists());
    let names: Vec<String> = net.candidates().iter().map(|c| c.name.clone()).collect();
    let mut outputs = Vec::new();
    for name in &names {
        net.set_subnet_by_name(name).unwrap();
        assert_eq!(&net.active().name, name);
        let logits = net.forward(&x).unwrap();
        assert_eq!(logits.dims(), &[PROBE_IMAGES, 10]);
        let v = logits.to_vec2::<f32>().unwrap();
        assert!(v.iter().flatten().all(|l| l.is_finite()));
        assert_eq!(net.classify(&x).unwrap().len(), PROBE_IMAGES);
        outputs.push(v);
    }
    assert_ne!(
        outputs.first(),
        outputs.last(),
        "smallest and largest candidates gave the same logits"
    );
    // Back to the first candidate: the same logits as before, no drift from switching.
    net.set_subnet_by_name(&names[0]).unwrap();
    assert_eq!(
        net.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
        outputs[0]
    );
    let t = latency::switch_time(&mut net, 2_000).unwrap();
    assert!(t.median_us < 1_000.0, "median switch {} us", t.median_us);
}

#[test]
fn every_candidate_has_its_own_normalisation_statistics() {
    let (_dir, path) = weights_file();
    let net = SuperNet::load(&path, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let arch = net.arch().clone();
    for (i, c) in net.candidates().iter().enumerate() {
        let stats = net.bn_stats(i).unwrap();
        let layers = arch.active_layers(&c.config);
        assert_eq!(stats.len(), layers.len(), "{}", c.name);
        for (s, l) in stats.iter().zip(&layers) {
            let (_, cout) = l.channels_at(c.config.width);
            assert_eq!(s.layer, l.name);
            assert_eq!(s.mean.dims(), &[cout]);
            let var = s.var.to_vec1::<f32>().unwrap();
            assert!(var.iter().all(|v| *v > 0.0), "{} {}", c.name, l.name);
            for what in ["mean", "var"] {
                let name = format!("bn.{}.{}.{what}", c.name, l.name);
                assert!(file.tensor(&name).is_ok(), "file lacks {name}");
            }
        }
    }
    // Two candidates of the same width but different depth see different inputs in the
    // last stage, so their statistics there must differ (they were calibrated, not shared).
    let by_name = |n: &str| net.find(n).unwrap();
    let shallow = by_name("d1-1-1_w1.0");
    let deep = by_name("d1-2-2_w1.0");
    let last_stage_first_block = |i: usize| {
        net.bn_stats(i)
            .unwrap()
            .iter()
            .find(|s| s.layer == "s2.b0")
            .unwrap()
            .mean
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_ne!(
        last_stage_first_block(shallow),
        last_stage_first_block(deep)
    );
}
