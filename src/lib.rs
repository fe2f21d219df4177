//! ballast placeholder
pub mod config;
pub mod scheduler;
