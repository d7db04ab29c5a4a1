//! The database: connection pool, embedded forward-only migrations, and one
//! module per entity holding its typed rows and the queries the API runs.
//!
//! Handlers call these functions and never write SQL; a row's state columns
//! are parsed into the `codersdk` enums when the row is read, so an unknown
//! value is an error here rather than a silent default later. Queries are
//! checked at run time (no live database at build time). The provisioner job
//! queue keeps its own queries in `provisionerd::queue`.

pub mod agent_scripts;
pub mod agents;
pub mod api_keys;
pub mod apps;
pub mod audit;
pub mod builds;
pub mod files;
pub mod jobs;
pub mod port_shares;
pub mod replicas;
pub mod resources;
pub mod schedules;
pub mod template_versions;
pub mod templates;
#[cfg(test)]
mod tests;
pub mod user_links;
pub mod users;
pub mod workspaces;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::ConnectOptions;
use std::time::Duration;

/// The migrations, embedded in the binary and run at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stable fingerprint of the embedded migrations (test template databases
/// are keyed by it so a schema change never reuses a stale template).
pub fn migrations_fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for m in MIGRATOR.iter() {
        h.update(m.version.to_be_bytes());
        h.update(&m.checksum);
    }
    hex::encode(&h.finalize()[..8])
}

/// Opens a pool. Statement logging is at debug level only: statements carry no
/// secrets, but keep the default log quiet.
pub async fn connect(options: PgConnectOptions, max: u32) -> Result<PgPool, sqlx::Error> {
    let options = options.log_statements(tracing::log::LevelFilter::Debug);
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await
}

/// Runs pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
