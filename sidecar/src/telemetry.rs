//! Metric families and tracing setup.
