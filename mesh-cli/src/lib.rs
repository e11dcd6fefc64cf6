//! mesh-cli: the operator command line (library part, so tests can drive the pure pieces).

pub mod demo;
pub mod run;
