//! dnngovd's configuration file (`Config::parse`).
//!
//! Checks: no panic; an error names the file; an accepted configuration holds values
//! within the documented ranges. (`Config` has no serialiser, so no round trip.)
#![no_main]

use dnngov_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(config) => {
            let control = &config.control;
            assert!((1..=1000).contains(&control.tick_ms));
            assert!((control.tick_ms..=60_000).contains(&control.optimiser_period_ms));
            // Parsing is a function of the text.
            assert_eq!(Config::parse(text, "fuzz.toml").unwrap(), config);
        }
        Err(error) => {
            let message = format!("{error:#}");
            assert!(message.starts_with("fuzz.toml"), "{message}");
        }
    }
});
