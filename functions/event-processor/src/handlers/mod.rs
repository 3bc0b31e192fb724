//! One module per provider: its events' business processing.

pub mod standard;
pub mod tilby;
pub mod tribe;
pub mod tribemade;
pub mod trifft;
pub mod trybe;
