//! Persistence: the broker's state in an append-only log, so that what was acknowledged
//! survives restarts, crashes and kill -9.
//!
//! [`Store`] is the small interface the broker writes through: it is opened (and read) at
//! start, takes appended changes (puts and deletes of keys), says when they are durable, and
//! compacts itself in the background. What the keys and values mean is the broker's
//! business; a cluster could keep the same records elsewhere.
mod compact;
mod engine;
pub mod import;
mod log;
pub mod records;

pub(crate) use engine::aside_path;
pub use engine::{DurableWaiter, LoadReport, Op, Records, Store, StoreError, StoreOptions, SyncPolicy};
pub use log::{Damage, ManifestError};

#[cfg(test)]
mod tests;
