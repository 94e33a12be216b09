//! `connect`: the enrollment sequence.

pub mod sequence;

pub use sequence::*;
