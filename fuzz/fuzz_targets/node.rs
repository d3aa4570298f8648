//! Four nodes and a rogue peer under arbitrary link cuts, bytes, spans, transactions and
//! time (see `dmsg_fuzz::node`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dmsg_fuzz::check_node(data);
});
