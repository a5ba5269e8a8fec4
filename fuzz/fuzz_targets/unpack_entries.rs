//! Fuzzes the unpacker with archives built from chosen entries (dangerous path segments, links
//! to anywhere, in any order) rather than raw bytes: the semantics of links and paths get
//! explored instead of header checksums. Tar, tar.gz and zip, with the oracle of `tds_fuzz`.
#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(format) = u.int_in_range(0u8..=2) else { return };
    let Ok(entries) = tds_fuzz::fuzz_entries(&mut u) else { return };
    match format {
        0 => tds_fuzz::check_unpack_with(|abs| tds_fuzz::raw_tar(&entries, abs), "a.tar"),
        1 => tds_fuzz::check_unpack_with(
            |abs| {
                use std::io::Write as _;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tds_fuzz::raw_tar(&entries, abs)).expect("gzip");
                gz.finish().expect("gzip")
            },
            "a.tar.gz",
        ),
        _ => tds_fuzz::check_unpack_with(|abs| tds_fuzz::zip_of(&entries, abs), "a.zip"),
    }
});
