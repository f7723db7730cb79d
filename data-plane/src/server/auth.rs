//! The caller check in front of every service, and the start-up rule that
//! no worker runs open by accident.

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_shared::caller_key::KeyHasher;
use switchyard_shared::seal::MasterKeys;

use super::{Settings, StartError};
use crate::access::Access;
use crate::catalog::Catalog;

/// Who may call, from the settings; refuses to start a worker that would
/// check nobody unless `--no-auth` says so.
pub(super) fn access(
    settings: &Settings,
    catalog: &Arc<ArcSwap<Catalog>>,
) -> Result<Access, StartError> {
    let hashers: Vec<KeyHasher> = settings
        .master_keys
        .iter()
        .flat_map(MasterKeys::all)
        .map(KeyHasher::new)
        .collect();
    if settings.no_auth {
        tracing::warn!(
            "authentication is OFF (--no-auth): anyone who reaches this port may call every model"
        );
    } else {
        if !settings.auth.is_disabled() {
            tracing::warn!(
                "SWITCHYARD_INFERENCE_TOKENS is deprecated: give each service its own caller key \
                 (CreateCaller); the tokens keep working meanwhile, with every model and no limits"
            );
        }
        if settings.auth.is_disabled() && hashers.is_empty() {
            return Err(StartError::Open);
        }
    }
    Ok(Access::new(
        catalog.clone(),
        hashers,
        settings.auth.clone(),
        settings.no_auth,
        settings.metrics.auth_failures.clone(),
    ))
}
