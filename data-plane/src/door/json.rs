//! Reading OpenAI JSON bodies field by field: each accessor names the
//! parameter in its error, so a caller learns what to fix.

use base64::Engine as _;
use serde_json::{Map, Value};
use switchyard_proto::v1 as pb;

use super::error::DoorError;

pub type R<T> = Result<T, DoorError>;

pub fn bad(param: &str, message: impl Into<String>) -> DoorError {
    DoorError::invalid(Some(param.to_owned()), message)
}

/// A request body, which must be a JSON object.
pub fn object(body: &[u8]) -> R<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DoorError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    match v {
        Value::Object(b) => Ok(b),
        _ => Err(DoorError::invalid(None, "the body must be a JSON object")),
    }
}

/// The body's fields not in `known`: passed to the upstream as `extra`.
pub fn unknown_fields(b: &Map<String, Value>, known: &[&str]) -> Map<String, Value> {
    b.iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn str_of<'a>(v: &'a Value, param: &str) -> R<Option<&'a str>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(bad(param, format!("{param} must be a string"))),
    }
}

pub fn u32_of(v: &Value, param: &str) -> R<Option<u32>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(
                    param,
                    format!("{param} must be a whole number from 0 to 2^32-1"),
                )
            }),
        _ => Err(bad(param, format!("{param} must be a number"))),
    }
}

pub fn f32_of(v: &Value, param: &str) -> R<Option<f32>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64().map(|f| f as f32)),
        _ => Err(bad(param, format!("{param} must be a number"))),
    }
}

pub fn bool_of(v: &Value, param: &str) -> R<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(bad(param, format!("{param} must be true or false"))),
    }
}

pub fn cache_of(v: &Value, param: &str) -> R<Option<pb::CacheControl>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(pb::CacheControl {
            ttl: str_of(
                o.get("ttl").unwrap_or(&Value::Null),
                &format!("{param}.ttl"),
            )?
            .unwrap_or_default()
            .to_owned(),
        })),
        _ => Err(bad(
            param,
            format!("{param} must be an object like {{\"type\": \"ephemeral\"}}"),
        )),
    }
}

/// `data:<media type>;base64,<data>` split into its media type and bytes.
pub fn data_url(url: &str, param: &str) -> R<Option<(String, Vec<u8>)>> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    let (head, data) = rest
        .split_once(',')
        .ok_or_else(|| bad(param, format!("{param} is a data: URL without data")))?;
    let media = head
        .strip_suffix(";base64")
        .ok_or_else(|| bad(param, format!("{param} must be a base64 data: URL")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(param, format!("{param} holds invalid base64: {e}")))?;
    Ok(Some((media.to_owned(), bytes)))
}
