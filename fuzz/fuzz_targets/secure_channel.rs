//! The secure channel's receive path under arbitrary bytes (see
//! `fuzz/src/secure_channel.rs` for the input format and the invariants).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/secure_channel.rs"]
mod secure_channel;

fuzz_target!(|data: &[u8]| {
    secure_channel::check_secure_channel(data);
});
