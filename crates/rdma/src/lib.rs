//! placeholder
pub mod chan;
