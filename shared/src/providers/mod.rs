//! One module per provider: its rules (a [`crate::provider::Provider`]), its typed model for
//! the processor, and its test vectors. Adding a provider adds a module here and touches
//! nothing else.

pub mod trybe;
