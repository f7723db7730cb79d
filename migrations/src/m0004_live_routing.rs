//! Live routing (issue 18): a member's concurrency cap, context window and
//! pinned key; a provider's further named keys; a route tier's condition on
//! the request.
//!
//! A provider key's credential is stored exactly like the provider's own
//! (`credential_*` columns of `providers`): an inline secret sealed with the
//! master key, or an `env:`/`file:` reference. The provider's own
//! credential is the key named "default".
//!
//! One column per ALTER TABLE: SQLite takes a single change per statement.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

const MEMBER_COLUMNS: [&str; 3] = ["max_concurrency", "context_tokens", "key"];
const TIER_COLUMNS: [&str; 4] = [
    "when_images",
    "when_reasoning",
    "when_tools",
    "when_min_prompt_tokens",
];

#[async_trait::async_trait]
// sea-orm's `MigrationTrait` spells `&SchemaManager` without its lifetime.
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let member_columns = [
            // Requests in flight at once, fleet-wide; unset = no cap.
            integer_null("max_concurrency"),
            // The model's context window in tokens; unset = unknown.
            big_integer_null("context_tokens"),
            // A key name of the member's provider; unset = every key.
            string_len_null("key", 63),
        ];
        for col in member_columns {
            manager
                .alter_table(Table::alter().table("members").add_column(col).to_owned())
                .await?;
        }
        // Existing tiers ask nothing of the request.
        let tier_columns = [
            boolean("when_images").default(false).to_owned(),
            boolean("when_reasoning").default(false).to_owned(),
            boolean("when_tools").default(false).to_owned(),
            big_integer("when_min_prompt_tokens").default(0).to_owned(),
        ];
        for col in tier_columns {
            manager
                .alter_table(
                    Table::alter()
                        .table("route_tiers")
                        .add_column(col)
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table("provider_keys")
                    .col(pk_uuid("id"))
                    .col(uuid("provider_id"))
                    .col(string_len("name", 63))
                    // Order the keys were given in (rotation order).
                    .col(integer("position"))
                    .col(string_len("credential_source", 16))
                    .col(blob_null("credential_sealed"))
                    .col(string_len_null("credential_reference", 1024))
                    .col(string_len_null("credential_fingerprint", 16))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_provider_keys_provider")
                            .from("provider_keys", "provider_id")
                            .to("providers", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_provider_keys_name")
                    .table("provider_keys")
                    .col("provider_id")
                    .col("name")
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("provider_keys").to_owned())
            .await?;
        for col in TIER_COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table("route_tiers")
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for col in MEMBER_COLUMNS {
            manager
                .alter_table(Table::alter().table("members").drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
