//! `coderd`: the coordinator. HTTP API, Postgres state, peer coordination,
//! provisioner jobs, and an embedded relay.

mod api;
pub mod authz;
pub mod coordination;
mod database;
mod meshpeer;
mod metrics;
pub mod oidc;
pub mod postgres;
pub mod provisioner;
pub mod provisionerd;
pub mod pubsub;
pub mod relay;
pub mod replicas;
pub mod scheduler;
mod secrets;
mod server;
#[cfg(feature = "testutil")]
pub mod testutil;

pub use api::apps::resolve::PathAppConfig;
pub use api::apps::subdomain::Wildcard;
pub use api::{app, route_table, Access, ApiConfig, AppState};
pub use database::{connect as connect_db, migrate, migrations_fingerprint};
pub use server::{default_data_dir, run, ServerConfig, ServerError, TlsConfig};
