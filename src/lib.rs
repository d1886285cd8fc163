//! socketserver: Python's `socketserver`, done the Rust way (tutorial below, WIP).
#![deny(missing_docs)]

mod addr;
pub mod framing;
mod handler;
pub mod mode;
mod options;
mod request;
mod server;
#[cfg(feature = "ctrlc")]
mod signal;
mod stats;
mod sys;
pub mod transport;

pub use addr::ClientAddr;
pub use handler::{
    BaseRequestHandler, Closure, Constructor, DatagramRequestHandler, HandlerError, HandlerFactory,
    IntoHandler, StreamRequestHandler,
};
pub use mode::{Mode, Overload, PoolConfig, Synchronous, Threading};
pub use options::{
    DEFAULT_BACKLOG, DEFAULT_MAX_PACKET_SIZE, DEFAULT_READ_TIMEOUT, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_WRITE_TIMEOUT,
};
pub use request::{Connection, DatagramRequest, Request, SocketWriter, StreamRequest};
pub use server::{
    Builder, Handled, Server, ServerHandle, TcpServer, ThreadingTcpServer, ThreadingUdpServer,
    UdpServer,
};
#[cfg(feature = "ctrlc")]
pub use signal::shutdown_on_ctrl_c;
pub use stats::Stats;
pub use transport::{BindAddr, Tcp, Transport, Udp};
