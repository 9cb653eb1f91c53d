use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: [&str; 4] = ["sched", "sched_classic", "infer", "gpu"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for name in PROGRAMS {
        let src = format!("src/bpf/{name}.bpf.c");
        let args: Vec<String> = vec!["-Wall".into(), "-Werror".into()];
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(args)
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building {src}: {e:#}"));
        println!("cargo:rerun-if-changed={src}");
    }
    for header in ["intf.h", "kernel.h", "sched_common.bpf.h"] {
        println!("cargo:rerun-if-changed=src/bpf/{header}");
    }
}
