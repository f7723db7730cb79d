//! Issue 18's configuration over gRPC against the real binary, on Postgres
//! and on SQLite: a provider's named keys (sealed or referenced like its
//! own credential, never returned), members' max_concurrency /
//! context_tokens / key, route tiers' conditions, the snapshot workers
//! load, and apply → export round trips.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod apply;
mod keys;
mod migration;
mod tiers;

use common::*;
use secrecy::ExposeSecret as _;
use switchyard_proto::v1 as pb;
use tonic::Code;

const OWN: &str = "sk-own-0123456789abcdef";
const SECOND: &str = "sk-second-0123456789wxyz";

fn inline(secret: &str) -> Option<pb::CredentialInput> {
    Some(pb::CredentialInput {
        source: Some(pb::credential_input::Source::Inline(secret.into())),
    })
}

fn reference(r: &str) -> Option<pb::CredentialInput> {
    Some(pb::CredentialInput {
        source: Some(pb::credential_input::Source::Reference(r.into())),
    })
}

fn key(name: &str, credential: Option<pb::CredentialInput>) -> pb::ProviderKey {
    pb::ProviderKey {
        name: name.into(),
        credential,
        credential_info: None,
    }
}

fn names(p: &pb::Provider) -> Vec<&str> {
    p.keys.iter().map(|k| k.name.as_str()).collect()
}

/// The status code and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("refused");
    (s.code(), s.message().to_owned())
}

async fn update_keys(
    c: &mut Client,
    provider: &str,
    keys: Vec<pb::ProviderKey>,
) -> Result<tonic::Response<pb::Provider>, tonic::Status> {
    c.update_provider(pb::UpdateProviderRequest {
        provider: Some(pb::Provider {
            name: provider.into(),
            keys,
            ..Default::default()
        }),
        update_mask: mask(&["keys"]),
    })
    .await
}

fn tier(pool: &str, when: Option<pb::TierCondition>) -> pb::RouteTier {
    pb::RouteTier {
        target: Some(pb::route_tier::Target::Pool(pool.into())),
        backup: false,
        when,
    }
}

/// The provider `name` as GetProvider shows it.
async fn provider_named(c: &mut Client, name: &str) -> pb::Provider {
    c.get_provider(pb::GetRequest {
        id_or_name: name.into(),
    })
    .await
    .expect("get")
    .into_inner()
}
