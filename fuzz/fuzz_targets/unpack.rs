//! The tar unpacker, into a fresh directory per input. See `pcp::fuzzing::unpack`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    pcp::fuzzing::unpack(data, dir.path());
});
