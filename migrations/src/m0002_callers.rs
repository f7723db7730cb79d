//! Callers: who may call the data plane. Each holds a keyed hash of its
//! current key (and of the previous one during a rotation's grace period),
//! never the key itself.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
// sea-orm's `MigrationTrait` spells `&SchemaManager` without its lifetime.
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("callers")
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("name", 63))
                    .col(text("description"))
                    .col(boolean("enabled"))
                    // Virtual model names (pools and routes) it may call; "*" = all.
                    .col(json("models"))
                    .col(boolean("allow_direct"))
                    .col(big_integer_null("rpm_limit"))
                    .col(big_integer_null("tpm_limit"))
                    .col(big_integer_null("daily_token_budget"))
                    .col(big_integer_null("monthly_token_budget"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .col(json("labels"))
                    .col(string_len("certificate_subject", 256))
                    // HMAC-SHA256 of the key under a key derived from the master key.
                    .col(blob_null("key_hash"))
                    .col(string_len("key_prefix", 16))
                    .col(blob_null("previous_key_hash"))
                    .col(timestamp_with_time_zone_null("previous_key_expires_at"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("callers").to_owned())
            .await
    }
}
