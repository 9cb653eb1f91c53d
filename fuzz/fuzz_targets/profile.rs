//! Profile files (`Profile::from_json`): the measurements and the Pareto library an app
//! registers, written by the profiler or by hand.
//!
//! Checks: no panic; an error names the file; an accepted profile's library passes the
//! protocol's validation (the agent would accept it) and the profile survives
//! save -> load unchanged.
#![no_main]

use dnngov_client::profile::{Profile, ProfileError};
use governor_proto::validate::validate_subnets;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.profile.json");
    match Profile::from_json(text, path) {
        Ok(profile) => {
            if !profile.library.is_empty() {
                validate_subnets(&profile.library).unwrap();
            }
            for m in &profile.measurements {
                assert!((0.0..=100.0).contains(&m.accuracy_pct));
                assert!(m.latency_ms >= 0.0 && m.latency_p90_ms >= 0.0);
            }
            let saved = serde_json::to_string_pretty(&profile).expect("profiles serialise");
            let again = Profile::from_json(&saved, path)
                .unwrap_or_else(|e| panic!("a profile as saved does not load: {e}\n{saved}"));
            assert_eq!(again, profile, "save -> load changed the profile");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with("fuzz.profile.json"), "{message}");
            assert!(!matches!(error, ProfileError::Io { .. }));
        }
    }
});
