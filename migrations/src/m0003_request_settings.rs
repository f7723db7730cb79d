//! Per-member and per-pool request settings: a member's default
//! `max_output_tokens` (for requests that set no max_tokens) and whether a
//! pool's callers may send `extra_json` (`allow_request_extra`).
//!
//! One column per ALTER TABLE: SQLite takes a single change per statement.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
// sea-orm's `MigrationTrait` spells `&SchemaManager` without its lifetime.
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("members")
                    // Unset: the request's own max_tokens, or the adapter's default.
                    .add_column(integer_null("max_output_tokens"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("pools")
                    // Existing pools keep allowing `extra_json`, as before.
                    .add_column(boolean("allow_request_extra").default(true))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("pools")
                    .drop_column("allow_request_extra")
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("members")
                    .drop_column("max_output_tokens")
                    .to_owned(),
            )
            .await
    }
}
