//! Chunk header parsing and opening a chunk sealed under the fixed key. See `pcp::fuzzing::chunk`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pcp::fuzzing::chunk(data));
