//! A directory's resume (journal, staging, then the rest of the tar stream), in a fresh
//! directory per input. See `pcp::fuzzing::resume`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in(pcp::fuzzing::scratch_base()).expect("create a directory");
    pcp::fuzzing::resume(data, dir.path());
});
