//! The fuzz targets' code, as a library so that seeds and replays can use it too.
pub mod broker;
