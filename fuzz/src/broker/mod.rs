//! The `broker` fuzz target: one [`midge_broker::Broker`] with an ACL, up to four clients
//! (3.1, 3.1.1 and 5.0, some with persistent sessions) driven through the same
//! [`midge_broker::broker::Link`]s the connection tasks run, by a sequence of operations
//! decoded from the input ([`ops`]), with a model of what each client may receive checked
//! after every packet ([`world`], [`checks`]).
//!
//! Set `MIDGE_FUZZ_TRACE=1` to print the operations and every packet exchanged, and
//! `MIDGE_FUZZ_STRICT=1` (or `=ID`) to make the known findings ([`world::KNOWN_FINDINGS`])
//! fatal (or one of them), as when minimizing one.
pub mod checks;
pub mod ops;
pub mod seeds;
pub mod world;

/// Runs one input: panics when the broker panics or breaks an invariant.
pub fn run(data: &[u8]) {
    let input = ops::decode(data);
    let trace = std::env::var_os("MIDGE_FUZZ_TRACE").is_some();
    let mut w = world::World::new(input.config, trace);
    for op in &input.ops {
        w.apply(op);
    }
    w.end();
}
