//! `extra_json`: the body fields a caller adds to what the upstream is sent,
//! and the rules that keep them from carrying an error sentence or switching
//! off what limits and budgets count.

use serde_json::{Map, Value};

use super::{bad, json_object};
use crate::error::DpError;

/// Body fields `extra_json` may never set: what Switchyard itself sends, and
/// what limits and budgets are counted by (the output cap, the number of
/// choices, streaming and its usage frame; OpenAI's and Anthropic's names).
const RESERVED_EXTRA: [&str; 10] = [
    "model",
    "messages",
    "input",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
    "best_of",
];

/// Whether `key` is a field name: `^[A-Za-z_][A-Za-z0-9_.-]{0,63}$`. Providers
/// echo unknown field names in their error messages; a name can carry no
/// sentence of theirs.
fn is_field_name(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `extra_json`: a JSON object whose keys are merged into the upstream body.
pub fn extra(text: &str) -> Result<Option<Map<String, Value>>, DpError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match json_object(text, "extra_json")? {
        Value::Object(m) if m.is_empty() => Ok(None),
        Value::Object(m) => {
            for k in m.keys() {
                if !is_field_name(k) {
                    let shown: String = k.chars().take(64).collect();
                    return Err(bad(
                        format!("extra_json.{shown}"),
                        "is not a field name: use up to 64 letters, digits, '_', '.' or '-', starting with a letter or '_'",
                    ));
                }
                if RESERVED_EXTRA.contains(&k.as_str()) {
                    return Err(bad(
                        format!("extra_json.{k}"),
                        "may not be set as an extra field: Switchyard sets it (limits and budgets count it); use the request's own field",
                    ));
                }
            }
            Ok(Some(m))
        }
        _ => Ok(None),
    }
}
