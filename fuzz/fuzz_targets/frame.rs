//! Frame decoding: headers, `read_frame`, and opening under the fixed key.
//! See `pcp::fuzzing::frame`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pcp::fuzzing::frame(data));
