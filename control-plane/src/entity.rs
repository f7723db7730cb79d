//! sea-orm entities: one module per table of `migrations/`.

pub mod config_state {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "config_state")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub revision: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod provider {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "providers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub kind: String,
        pub base_url: String,
        pub credential_source: String,
        pub credential_sealed: Option<Vec<u8>>,
        pub credential_reference: Option<String>,
        pub credential_fingerprint: Option<String>,
        pub extra_headers: Json,
        pub connect_timeout_ms: i32,
        pub first_byte_timeout_ms: i32,
        pub request_timeout_ms: i32,
        pub enabled: bool,
        pub revision: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod provider_key {
    use sea_orm::entity::prelude::*;

    /// A provider's further named key (m0004); its credential is stored
    /// like the provider's own.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "provider_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub provider_id: Uuid,
        pub name: String,
        pub position: i32,
        pub credential_source: String,
        pub credential_sealed: Option<Vec<u8>>,
        pub credential_reference: Option<String>,
        pub credential_fingerprint: Option<String>,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod pool {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "pools")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub strategy: String,
        pub transient_retries: i32,
        pub failure_threshold: i32,
        pub cooldown_base_ms: i64,
        pub cooldown_max_ms: i64,
        pub advance_on_permanent: bool,
        pub enabled: bool,
        pub description: String,
        /// Whether callers may send `extra_json` to the pool's members (m0003).
        pub allow_request_extra: bool,
        pub revision: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub pool_id: Uuid,
        pub provider_id: Uuid,
        pub upstream_model: String,
        pub weight: i32,
        pub priority: i32,
        pub status: String,
        pub rpm_limit: Option<i64>,
        pub tpm_limit: Option<i64>,
        /// max_tokens for requests that set none (m0003).
        pub max_output_tokens: Option<i32>,
        /// Requests in flight at once, fleet-wide (m0004).
        pub max_concurrency: Option<i32>,
        /// The model's context window in tokens (m0004).
        pub context_tokens: Option<i64>,
        /// The one provider key this member uses; None = every key (m0004).
        pub key: Option<String>,
        pub revision: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod route {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "routes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub enabled: bool,
        pub description: String,
        pub revision: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod route_tier {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "route_tiers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub route_id: Uuid,
        pub position: i32,
        pub pool_id: Option<Uuid>,
        pub provider_id: Option<Uuid>,
        pub upstream_model: Option<String>,
        pub backup: bool,
        /// The tier's condition on the request (m0004); all unset = always.
        pub when_images: bool,
        pub when_reasoning: bool,
        pub when_tools: bool,
        pub when_min_prompt_tokens: i64,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod change_outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "change_outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub revision: i64,
        pub event: Json,
        pub published: bool,
        pub created_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

pub mod caller {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "callers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub name: String,
        pub description: String,
        pub enabled: bool,
        pub models: Json,
        pub allow_direct: bool,
        pub rpm_limit: Option<i64>,
        pub tpm_limit: Option<i64>,
        pub daily_token_budget: Option<i64>,
        pub monthly_token_budget: Option<i64>,
        pub expires_at: Option<DateTimeUtc>,
        pub labels: Json,
        pub certificate_subject: String,
        pub key_hash: Option<Vec<u8>>,
        pub key_prefix: String,
        pub previous_key_hash: Option<Vec<u8>>,
        pub previous_key_expires_at: Option<DateTimeUtc>,
        pub revision: i64,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}
