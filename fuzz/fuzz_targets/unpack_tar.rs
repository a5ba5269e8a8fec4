//! Fuzzes the unpacker on arbitrary bytes named `a.tar`, with the oracle of `tds_fuzz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tds_fuzz::check_unpack(data, "a.tar"));
