//! Fuzzes `Config::parse` (an operator's file, but also text pasted from anywhere): it must
//! answer with a config or with errors, never panic, and every error must render.
#![no_main]

use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match tds_core::Config::parse(text, Path::new("/fuzz/base")) {
        Ok(config) => {
            for env in &config.environments {
                assert!(config.environment(&env.name).is_some());
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result with no errors");
            let _ = errors.to_string();
        }
    }
});
