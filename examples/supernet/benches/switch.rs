//! Switch time and batch-1 latency of the default super-network on the CPU.
//!
//! `cargo bench -p dnngov-supernet --bench switch`. The weights are freshly initialised:
//! timing does not depend on their values, and the benchmark needs no training run.
//! Forward latency is measured with matrix products on one thread and on every core
//! (candle reads `RAYON_NUM_THREADS` at each product); element-wise operations run on one
//! thread, as the `dnngov-supernet` binary runs them.

use candle_core::{Device, Tensor};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dnngov_supernet::{ArchConfig, SuperNet};

fn switch_and_forward(c: &mut Criterion) {
    // Before candle's first operation, which sizes its element-wise pool once.
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let device = Device::Cpu;
    let mut net = SuperNet::new(ArchConfig::default(), &device).expect("super-network");
    let n = net.candidates().len();
    let [ch, h, w] = net.image_shape();
    let image = Tensor::randn(0f32, 1.0, (1, ch, h, w), &device).expect("image");

    c.bench_function("set_subnet smallest<->largest", |b| {
        let mut k = 0usize;
        b.iter(|| {
            k += 1;
            let target = if k.is_multiple_of(2) { 0 } else { n - 1 };
            net.set_subnet_index(black_box(target)).expect("switch");
        })
    });
    c.bench_function("plan build largest (switch without prepared plans)", |b| {
        b.iter(|| net.rebuild_plan_cost(black_box(n - 1)).expect("plan"))
    });
    for threads in [1, cores] {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        for (label, index) in [("smallest", 0), ("largest", n - 1)] {
            net.set_subnet_index(index).expect("switch");
            let name = format!(
                "forward batch 1 {label} ({}) {threads} thread(s)",
                net.active().name
            );
            c.bench_function(&name, |b| {
                b.iter(|| net.forward(black_box(&image)).expect("forward"))
            });
        }
    }
}

criterion_group!(benches, switch_and_forward);
criterion_main!(benches);
