//! The initial schema: config revision, providers, pools, members, routes,
//! route tiers and the change outbox.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

fn fk(
    name: &str,
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .to_owned()
}

#[async_trait::async_trait]
// sea-orm's `MigrationTrait` spells `&SchemaManager` without its lifetime.
#[allow(elided_lifetimes_in_paths)]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row: the global, strictly increasing config revision. Every
        // write transaction bumps it first, which also serialises writers.
        manager
            .create_table(
                Table::create()
                    .table("config_state")
                    .col(integer("id").primary_key())
                    .col(big_integer("revision"))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table("config_state")
                    .columns(["id", "revision"])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("providers")
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("name", 63))
                    .col(string_len("kind", 16))
                    .col(string_len("base_url", 2048))
                    .col(string_len("credential_source", 16))
                    .col(blob_null("credential_sealed"))
                    .col(string_len_null("credential_reference", 1024))
                    .col(string_len_null("credential_fingerprint", 16))
                    .col(json("extra_headers"))
                    .col(integer("connect_timeout_ms"))
                    .col(integer("first_byte_timeout_ms"))
                    .col(integer("request_timeout_ms"))
                    .col(boolean("enabled"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("pools")
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("name", 63))
                    .col(string_len("strategy", 16))
                    .col(integer("transient_retries"))
                    .col(integer("failure_threshold"))
                    .col(big_integer("cooldown_base_ms"))
                    .col(big_integer("cooldown_max_ms"))
                    .col(boolean("advance_on_permanent"))
                    .col(boolean("enabled"))
                    .col(text("description"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("members")
                    .col(pk_uuid("id"))
                    .col(uuid("pool_id"))
                    .col(uuid("provider_id"))
                    .col(string_len("upstream_model", 256))
                    .col(integer("weight"))
                    .col(integer("priority"))
                    .col(string_len("status", 16))
                    .col(big_integer_null("rpm_limit"))
                    .col(big_integer_null("tpm_limit"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .foreign_key(
                        &mut fk("fk_members_pool", ("members", "pool_id"), ("pools", "id"))
                            .on_delete(ForeignKeyAction::Cascade)
                            .to_owned(),
                    )
                    .foreign_key(
                        &mut fk(
                            "fk_members_provider",
                            ("members", "provider_id"),
                            ("providers", "id"),
                        )
                        .on_delete(ForeignKeyAction::Restrict)
                        .to_owned(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_members_pool_provider_model")
                    .table("members")
                    .col("pool_id")
                    .col("provider_id")
                    .col("upstream_model")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_members_provider")
                    .table("members")
                    .col("provider_id")
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table("routes")
                    .col(pk_uuid("id"))
                    .col(string_len_uniq("name", 63))
                    .col(boolean("enabled"))
                    .col(text("description"))
                    .col(big_integer("revision"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;

        // A tier is a pool, or a direct provider + upstream model.
        manager
            .create_table(
                Table::create()
                    .table("route_tiers")
                    .col(pk_uuid("id"))
                    .col(uuid("route_id"))
                    .col(integer("position"))
                    .col(uuid_null("pool_id"))
                    .col(uuid_null("provider_id"))
                    .col(string_len_null("upstream_model", 256))
                    .col(boolean("backup"))
                    .foreign_key(
                        &mut fk(
                            "fk_tiers_route",
                            ("route_tiers", "route_id"),
                            ("routes", "id"),
                        )
                        .on_delete(ForeignKeyAction::Cascade)
                        .to_owned(),
                    )
                    .foreign_key(
                        &mut fk("fk_tiers_pool", ("route_tiers", "pool_id"), ("pools", "id"))
                            .on_delete(ForeignKeyAction::Restrict)
                            .to_owned(),
                    )
                    .foreign_key(
                        &mut fk(
                            "fk_tiers_provider",
                            ("route_tiers", "provider_id"),
                            ("providers", "id"),
                        )
                        .on_delete(ForeignKeyAction::Restrict)
                        .to_owned(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_route_tiers_position")
                    .table("route_tiers")
                    .col("route_id")
                    .col("position")
                    .unique()
                    .to_owned(),
            )
            .await?;

        // Written in the same transaction as the change it describes; the
        // publisher marks rows published once Redis has them.
        manager
            .create_table(
                Table::create()
                    .table("change_outbox")
                    .col(big_integer("revision").primary_key())
                    .col(json("event"))
                    .col(boolean("published"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_outbox_unpublished")
                    .table("change_outbox")
                    .col("published")
                    .col("revision")
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "change_outbox",
            "route_tiers",
            "routes",
            "members",
            "pools",
            "providers",
            "config_state",
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}
