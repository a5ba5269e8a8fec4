//! Fuzzes the unpacker on bytes named `a.tar`, with the oracle of `tds_fuzz`. Header checksums
//! are fixed up first (a mismatch would stop every mutated header at the first check); the
//! first byte chooses whether the result is also gzipped (`a.tar.gz`), which reaches the
//! stream bounds (end marker, trailer) through the decompressor.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut tar = rest.to_vec();
    tds_fuzz::fix_tar_checksums(&mut tar);
    if mode & 1 == 0 {
        tds_fuzz::check_unpack(&tar, "a.tar");
    } else {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        tds_fuzz::check_unpack(&gz.finish().expect("gzip"), "a.tar.gz");
    }
});
