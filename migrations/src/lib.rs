//! Schema migrations for the Switchyard config store.
//!
//! One schema serves Postgres (production) and SQLite (the embedded default).
//! The layout and its invariants are described in
//! `docs/adr/002-config-store-and-revisions.md`.

pub use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_callers;
mod m0003_request_settings;
mod m0004_live_routing;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_callers::Migration),
            Box::new(m0003_request_settings::Migration),
            Box::new(m0004_live_routing::Migration),
        ]
    }
}
