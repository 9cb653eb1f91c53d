include!(concat!(env!("OUT_DIR"), "/sched_classic.skel.rs"));
