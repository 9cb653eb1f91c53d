include!(concat!(env!("OUT_DIR"), "/infer.skel.rs"));
