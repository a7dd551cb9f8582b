//! The command-line clients: `midge pub`, `midge sub`, `midge rr`, with mosquitto's options.
mod c_numbers;
pub mod common;
mod debug;
pub mod help;
pub mod output;
mod properties;
pub mod pub_cmd;
pub mod rr_cmd;
pub mod sub_cmd;
mod tls;
