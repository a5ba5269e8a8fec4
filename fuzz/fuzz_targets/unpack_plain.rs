//! Fuzzes the plain-file path of the unpacker: the first line is the artifact name (any text,
//! so invalid names are tried too), the rest its content.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let name = String::from_utf8_lossy(&data[..split]);
    // Names that select an archive kind are fuzzed by the other targets.
    if tds_core::model::ArtifactKind::from_name(&name) != tds_core::model::ArtifactKind::Plain {
        return;
    }
    tds_fuzz::check_unpack(data.get(split + 1..).unwrap_or_default(), &name);
});
