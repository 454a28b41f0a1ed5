//! What a client talks to: the TCP listener, wire framing, commands, authentication and TLS,
//! over a node (or, with `--shards`, the router).

pub(crate) mod auth;
pub(crate) mod commands;
pub(crate) mod demo;
pub(crate) mod scram;
pub(crate) mod server;
pub(crate) mod tls;
pub(crate) mod wire;
