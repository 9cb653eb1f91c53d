include!(concat!(env!("OUT_DIR"), "/gpu.skel.rs"));
