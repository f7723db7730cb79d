//! The change message published on the Redis changes channel: one JSON
//! object per committed revision. Unknown resource or action names decode to
//! `Other`, so an older worker keeps working during a rolling upgrade.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Provider,
    Pool,
    Member,
    Route,
    /// A whole-config apply: many changes in one revision.
    Config,
    Caller,
    #[serde(other)]
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Deleted,
    Applied,
    #[serde(other)]
    Other,
}

/// `{"revision":7,"resource":"pool","action":"updated","id":"…","name":"coding","commit_time_ms":…}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeMessage {
    pub revision: u64,
    pub resource: Resource,
    pub action: Action,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub commit_time_ms: i64,
    /// Who made the change (the audit trail); empty from older servers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_decode_to_other() {
        let m: ChangeMessage = serde_json::from_str(
            r#"{"revision":3,"resource":"quota","action":"renamed","extra":1}"#,
        )
        .expect("decodes");
        assert_eq!(m.revision, 3);
        assert_eq!(m.resource, Resource::Other);
        assert_eq!(m.action, Action::Other);
    }
}
