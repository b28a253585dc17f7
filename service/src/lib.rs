//! Casebook as a gRPC service: configuration, authentication, the one
//! error mapping, the protobuf conversions, the Cases, Events, Workers,
//! Admin, Audit, Records and Integrity services, and the server that runs them (the `casebook` binary's
//! `serve`), and the sustained-load soak (`casebook soak`).

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod cases;
pub mod config;
pub mod convert;
pub mod events;
pub mod integrity;
pub mod metrics;
pub mod records;
pub mod server;
pub mod soak;
pub mod status;
pub mod workers;

pub use config::Config;
pub use server::{start, Running, ServeError};
