//! The resume manifest loader over a part file and manifest from the input. See `pcp::fuzzing::manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in(pcp::fuzzing::scratch_base()).expect("create a directory");
    pcp::fuzzing::manifest(data, dir.path());
});
