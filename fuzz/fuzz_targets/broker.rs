//! Drives the broker itself: clients connect, publish, subscribe, acknowledge, lose their
//! connections and take each other over while time passes and the timers run; every packet
//! the broker sends is checked against a model of what the client may receive. See
//! `src/broker/` for the operations and the invariants.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| midge_fuzz::broker::run(data));
