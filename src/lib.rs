//! socketserver: Python's `socketserver`, done the Rust way (work in progress).
#![deny(missing_docs)]

pub mod framing;
