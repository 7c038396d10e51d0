//! The tar unpacker, into a fresh directory per input. See `pcp::fuzzing::unpack`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir_in(pcp::fuzzing::scratch_base()).expect("create a directory");
    pcp::fuzzing::unpack(data, dir.path());
});
