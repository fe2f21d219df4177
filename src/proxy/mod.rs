//! The data path: what happens to a connection between accept and close.
//!
//! [`tcp`] picks a server, connects (retrying on another server when a connect fails) and hands the
//! two sockets to [`relay`], which copies bytes both ways with half-close, an idle timeout and
//! reset propagation.

pub mod relay;
mod splice;
pub mod tcp;
