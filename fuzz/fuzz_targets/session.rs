//! Two session links over an arbitrary fault schedule (see `dmsg_fuzz::session`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmsg_fuzz::check_session(data);
});
