//! One `Connection` driven by an arbitrary script of peer frames, raw bytes, application
//! commands, time steps and transport loss (see `dmsg_fuzz::connection`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dmsg_fuzz::check_connection(data);
});
