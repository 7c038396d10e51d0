//! The code parser: FromStr and Code::from_words. See `pcp::fuzzing::code`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pcp::fuzzing::code(data));
