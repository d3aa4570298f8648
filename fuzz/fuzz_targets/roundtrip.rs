//! Arbitrary headers, bodies and aux data: encode, decode, compare (see
//! `dmsg_fuzz::invariants::check_roundtrip`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: dmsg_fuzz::RoundtripInput| {
    dmsg_fuzz::check_roundtrip(&input.into());
});
