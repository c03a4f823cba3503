//! The parts of the `secref` command-line tool that are tested and fuzzed
//! on their own: the output masker of `secref run`. The binary is
//! `src/main.rs`; this library is not a stable API.

pub mod mask;

#[doc(hidden)]
pub mod fuzz;
