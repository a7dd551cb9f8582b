//! The network and transport layers: IP packets to TCP segments, and TCP segments to byte
//! streams.
pub mod ip;
pub mod tcp;
