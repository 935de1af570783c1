//! A job spec from a stranger: parsing and validating never panics, and a
//! spec that parses survives the trip through JSON (how it is stored)
//! unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [
        drover_proto::spec::from_yaml(text),
        drover_proto::spec::from_json(text),
    ] {
        if let Ok(spec) = parsed {
            let again = drover_proto::spec::from_json(&spec.to_json())
                .expect("a spec that parsed parses again from its JSON");
            assert_eq!(spec, again, "the JSON round trip changed the spec");
        }
    }
});
