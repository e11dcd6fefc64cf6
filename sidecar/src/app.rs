//! Runtimes, listeners, drain and wiring of every module.
