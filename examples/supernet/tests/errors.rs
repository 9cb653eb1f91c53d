//! Bad input gives an error that names what was wrong, and leaves the network usable.

use candle_core::{DType, Device, Tensor};
use dnngov_supernet::{ArchConfig, Error, SubnetConfig, SuperNet};

fn tiny_net() -> SuperNet {
    SuperNet::new(ArchConfig::tiny(), &Device::Cpu).unwrap()
}

#[test]
fn wrong_image_shape_is_rejected_with_both_shapes_named() {
    let net = tiny_net();
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let err = net.forward(&x).unwrap_err();
    assert!(matches!(err, Error::InputShape { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("[2, 3, 8, 8]"), "{msg}");
    assert!(msg.contains("[batch, 3, 16, 16]"), "{msg}");

    let unbatched = Tensor::zeros((3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        net.classify(&unbatched).unwrap_err(),
        Error::InputShape { .. }
    ));
    let err = net.classify_image(&[0.0; 10]).unwrap_err();
    assert!(err.to_string().contains("768 values"), "{err}");
    // The right shape still works afterwards.
    let ok = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.forward(&ok).unwrap().dims(), &[1, 10]);
}

#[test]
fn unknown_subnet_is_rejected_and_the_active_one_is_kept() {
    let mut net = tiny_net();
    let before = net.active_index();
    let err = net.set_subnet_by_name("d9-9-9_w1.0").unwrap_err();
    assert!(matches!(err, Error::UnknownSubnet { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("d9-9-9_w1.0"), "{msg}");
    assert!(msg.contains(&net.candidates()[0].name), "{msg}");
    assert_eq!(net.active_index(), before);

    let err = net.set_subnet_index(99).unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
    let not_a_candidate = SubnetConfig {
        depths: vec![1, 1, 2],
        width: 0.5,
    };
    assert!(matches!(
        net.set_subnet(&not_a_candidate).unwrap_err(),
        Error::UnknownSubnet { .. }
    ));
    assert!(matches!(
        SubnetConfig::parse("large").unwrap_err(),
        Error::BadSubnetName(_)
    ));
    assert_eq!(net.active_index(), before);
}

#[test]
fn invalid_candidate_configuration_is_rejected() {
    let too_deep = SubnetConfig {
        depths: vec![5, 1, 1],
        width: 1.0,
    };
    let err =
        SuperNet::with_candidates(ArchConfig::tiny(), vec![too_deep], 0, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("stage 0 depth 5"), "{err}");
}

#[test]
fn missing_weights_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.safetensors");
    let err = SuperNet::load(&path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Weights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("absent.safetensors") && msg.contains("cannot read"),
        "{msg}"
    );
}

#[test]
fn corrupt_weights_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a tensor file at all").unwrap();
    let msg = SuperNet::load(&garbage, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("garbage.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );

    // A real file cut short.
    let good = dir.path().join("good.safetensors");
    tiny_net().save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let msg = SuperNet::load(&cut, &Device::Cpu).unwrap_err().to_string();
    assert!(
        msg.contains("cut.safetensors") && msg.contains("not a valid safetensors"),
        "{msg}"
    );
}

/// Rewrites a saved file without the tensors `drop` selects, keeping its metadata.
fn without(src: &std::path::Path, dst: &std::path::Path, drop: impl Fn(&str) -> bool) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !drop(name))
        .collect();
    safetensors::serialize_to_file(kept, meta.metadata().clone(), dst).unwrap();
}

#[test]
fn weights_file_missing_a_tensor_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let net = tiny_net();
    net.save(&good).unwrap();

    let no_head = dir.path().join("no-head.safetensors");
    without(&good, &no_head, |n| n == "head.bias");
    let msg = SuperNet::load(&no_head, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing tensor head.bias"), "{msg}");

    let victim = net.candidates()[0].name.clone();
    let no_stats = dir.path().join("no-stats.safetensors");
    without(&good, &no_stats, |n| {
        n.starts_with(&format!("bn.{victim}."))
    });
    let msg = SuperNet::load(&no_stats, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no BatchNorm statistics for sub-network") && msg.contains(&victim),
        "{msg}"
    );
}

#[test]
fn safetensors_file_without_a_manifest_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.safetensors");
    let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    safetensors::serialize_to_file([("x", &t)], None, &path).unwrap();
    let msg = SuperNet::load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("no dnngov.supernet manifest"), "{msg}");
}
