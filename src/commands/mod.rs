//! The offline subcommands: `scan`, `eval`, `explain`, `pairs`, `check`, `test`. Each is a
//! function over readers and writers so tests can drive it without a process.

pub mod eval;
pub mod explain;
pub mod pairs;
pub mod scan;
