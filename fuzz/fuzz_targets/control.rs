//! Control message decoding. See `pcp::fuzzing::control`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pcp::fuzzing::control(data));
