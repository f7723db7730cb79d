//! `POST /v1/embeddings`: OpenAI's body read into `pb::EmbedRequest`, and
//! the answer written back in OpenAI's shape (floats, or base64 as the
//! official SDKs ask by default).

use base64::Engine as _;
use serde_json::Value;
#[cfg(test)]
use serde_json::json;
use switchyard_proto::v1 as pb;

use super::json::{R, bad, object, str_of, unknown_fields};

fn tokens(a: &[Value]) -> Option<Vec<u32>> {
    a.iter()
        .map(|t| t.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// `input`: a string, an array of strings, an array of token ids, or an
/// array of token-id arrays.
fn inputs(v: &Value) -> R<Vec<pb::EmbedInput>> {
    use pb::embed_input::Input;
    let text = |s: &str| pb::EmbedInput {
        input: Some(Input::Text(s.to_owned())),
    };
    let ids = |t: Vec<u32>| pb::EmbedInput {
        input: Some(Input::Tokens(pb::TokenIds { ids: t })),
    };
    let msg = "input must be a string, an array of strings, an array of token ids, or an array of token-id arrays";
    match v {
        Value::String(s) => Ok(vec![text(s)]),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_number) => {
            Ok(vec![ids(tokens(a).ok_or_else(|| bad("input", msg))?)])
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            Ok(a.iter().filter_map(Value::as_str).map(text).collect())
        }
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_array()
                    .and_then(|t| tokens(t))
                    .map(ids)
                    .ok_or_else(|| bad("input", msg))
            })
            .collect(),
        Value::Null => Err(bad("input", "input is required")),
        _ => Err(bad("input", msg)),
    }
}

/// A read embeddings body, and whether the answer is base64.
pub fn read(body: &[u8]) -> R<(pb::EmbedRequest, bool)> {
    let b = object(body)?;
    let get = |k: &str| b.get(k).unwrap_or(&Value::Null);
    let model = get("model")
        .as_str()
        .ok_or_else(|| bad("model", "model is required (a string)"))?;
    let base64 = match get("encoding_format") {
        Value::Null => false,
        Value::String(s) if s == "float" => false,
        Value::String(s) if s == "base64" => true,
        _ => {
            return Err(bad(
                "encoding_format",
                "encoding_format must be float or base64",
            ));
        }
    };
    let dimensions = match get("dimensions") {
        Value::Null => None,
        d => Some(
            d.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("dimensions", "dimensions must be a whole number"))?,
        ),
    };
    let user = str_of(get("user"), "user")?.unwrap_or_default().to_owned();
    let known = ["model", "input", "encoding_format", "dimensions", "user"];
    let extra = unknown_fields(&b, &known);
    Ok((
        pb::EmbedRequest {
            model: model.to_owned(),
            inputs: inputs(get("input"))?,
            dimensions,
            // The engine gives floats; the door encodes base64 itself.
            encoding: pb::EmbeddingEncoding::Float.into(),
            user,
            extra_json: if extra.is_empty() {
                String::new()
            } else {
                Value::Object(extra).to_string()
            },
            ..Default::default()
        },
        base64,
    ))
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    /// Serialized as f32 (shortest form), not widened to f64.
    Float(&'a [f32]),
    Base64(String),
}

#[derive(serde::Serialize)]
struct Item<'a> {
    object: &'static str,
    index: u32,
    embedding: Vector<'a>,
}

#[derive(serde::Serialize)]
struct EmbedUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// The answer in OpenAI's shape.
#[derive(serde::Serialize)]
pub struct Answer<'a> {
    object: &'static str,
    data: Vec<Item<'a>>,
    model: String,
    usage: EmbedUsage,
}

pub fn answer<'a>(r: &'a pb::EmbedResponse, asked: &str, base64: bool) -> Answer<'a> {
    let data = r
        .embeddings
        .iter()
        .map(|e| Item {
            object: "embedding",
            index: e.index,
            embedding: if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Float(&e.values)
            },
        })
        .collect();
    let input = r.usage.as_ref().map_or(0, |u| u.input_tokens);
    Answer {
        object: "list",
        data,
        model: super::chat_out::answer_model(&r.response_model, r.served_by.as_ref(), asked),
        usage: EmbedUsage {
            prompt_tokens: input,
            total_tokens: input,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_of_every_shape() {
        let read_input = |input: Value| {
            read(
                json!({"model": "emb", "input": input})
                    .to_string()
                    .as_bytes(),
            )
            .map(|(r, _)| r.inputs.len())
        };
        assert_eq!(read_input(json!("a")).ok(), Some(1));
        assert_eq!(read_input(json!(["a", "b"])).ok(), Some(2));
        assert_eq!(read_input(json!([1, 2, 3])).ok(), Some(1));
        assert_eq!(read_input(json!([[1, 2], [3]])).ok(), Some(2));
        let e = read_input(json!([1, "a"])).expect_err("mixed");
        assert_eq!(e.param.as_deref(), Some("input"));
        let (_, b64) =
            read(br#"{"model":"e","input":"x","encoding_format":"base64"}"#).expect("reads");
        assert!(b64);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let r = pb::EmbedResponse {
            embeddings: vec![pb::Embedding {
                index: 0,
                values: vec![1.0, -2.5],
                data: vec![],
            }],
            usage: Some(pb::Usage {
                input_tokens: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(answer(&r, "emb", true)).expect("serializes");
        let b = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().expect("a string"))
            .expect("base64");
        let floats: Vec<f32> = b
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(floats, [1.0, -2.5]);
        let floats = serde_json::to_string(&answer(&r, "emb", false)).expect("serializes");
        assert!(floats.contains(r#""embedding":[1.0,-2.5]"#), "{floats}");
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert_eq!(v["model"], "emb");
    }
}
