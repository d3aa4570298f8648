//! Any bytes into the decoder: `[split, config, stream...]` (see
//! `dmsg_fuzz::invariants::check_decode_bytes`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dmsg_fuzz::check_decode_bytes(data);
});
