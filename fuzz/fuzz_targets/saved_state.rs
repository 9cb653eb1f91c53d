//! The saved-state file that `dnngovctl restore` reads (`SavedState::parse`). Only root
//! can write it where the agent keeps it, but it names the files restore writes to.
//!
//! Checks: no panic; an accepted state names only files under the sysfs root it is
//! restored to, below `sys/`; it survives store -> load unchanged.
#![no_main]

use dnngov_agent::platform::state::SavedState;
use dnngov_agent::platform::sysfs::Sysfs;
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Path::new("saved-state.json");
    match SavedState::parse(text, origin) {
        Ok(state) => {
            let root = Path::new("/fuzz-root");
            let sysfs = Sysfs::new(root);
            for file in state.domains.iter().flat_map(|d| &d.files) {
                let full = sysfs.path(&file.path);
                let rest = full
                    .strip_prefix(root)
                    .map(|r| r.components().collect::<Vec<_>>());
                assert!(
                    rest.as_ref()
                        .is_ok_and(|r| r.first() == Some(&Component::Normal("sys".as_ref()))
                            && r.iter().all(|c| matches!(c, Component::Normal(_)))),
                    "{} is not a file under sys/ of the root: {}",
                    file.path.display(),
                    full.display()
                );
            }
            let json = serde_json::to_string_pretty(&state).expect("states serialise");
            let again = SavedState::parse(&json, origin)
                .unwrap_or_else(|e| panic!("a state as stored does not load: {e:#}\n{json}"));
            assert_eq!(again, state, "store -> load changed the state");
        }
        Err(error) => {
            let message = format!("{error:#}");
            assert!(message.contains("saved-state.json"), "{message}");
        }
    }
});
