//! Embeddings: `POST {base_url}/embeddings`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::super::wire::{error_in, merge_extra, parse_json, sat};
use super::super::{EmbedInput, EmbedRequest, Embeddings, Target, UpstreamError, Usage};

/// `input` is all strings or all token-id arrays; floats are asked for.
pub(in crate::upstream) fn embed_body(
    t: &Target,
    req: &EmbedRequest,
) -> Result<Value, UpstreamError> {
    let texts: Option<Vec<&str>> = req
        .inputs
        .iter()
        .map(|i| match i {
            EmbedInput::Text(s) => Some(s.as_str()),
            EmbedInput::Tokens(_) => None,
        })
        .collect();
    let tokens: Option<Vec<&[u32]>> = req
        .inputs
        .iter()
        .map(|i| match i {
            EmbedInput::Tokens(ids) => Some(ids.as_slice()),
            EmbedInput::Text(_) => None,
        })
        .collect();
    let input = match (texts, tokens) {
        (Some(texts), _) => json!(texts),
        (None, Some(tokens)) => json!(tokens),
        (None, None) => {
            return Err(UpstreamError::Unsupported(
                "OpenAI-compatible members take text or token ids in one request, not both".into(),
            ));
        }
    };
    let mut b = Map::new();
    b.insert("model".into(), json!(t.model));
    b.insert("input".into(), input);
    b.insert("encoding_format".into(), json!("float"));
    if let Some(d) = req.dimensions {
        b.insert("dimensions".into(), json!(d));
    }
    if let Some(u) = &req.user {
        b.insert("user".into(), json!(u));
    }
    merge_extra(&mut b, req.extra.as_ref());
    Ok(Value::Object(b))
}

/// One vector: an array of numbers, or (from servers that answer base64
/// whatever was asked) little-endian f32 bytes in base64.
fn vector(v: &Value) -> Result<Vec<f32>, UpstreamError> {
    let bad = |what: &str| UpstreamError::Protocol(format!("an embedding {what}"));
    match v {
        Value::Array(values) => values
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| bad("holds a value that is not a number"))
            })
            .collect(),
        Value::String(s) => {
            let bytes = B64
                .decode(s.trim())
                .map_err(|_| bad("is a string that is not base64"))?;
            if bytes.len() % 4 != 0 {
                return Err(bad("is base64 of a length that is not float32s"));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
        _ => Err(bad("is neither numbers nor base64")),
    }
}

/// The vectors in input order (by each item's `index`), exactly one per input.
pub(super) fn parse_embeddings(body: &[u8], inputs: usize) -> Result<Embeddings, UpstreamError> {
    let v = parse_json(body)?;
    if let Some(message) = error_in(&v) {
        return Err(UpstreamError::Event { message });
    }
    let data = v["data"]
        .as_array()
        .ok_or_else(|| UpstreamError::Protocol("response has no data array".into()))?;
    if data.len() != inputs {
        return Err(UpstreamError::Protocol(format!(
            "{} embeddings for {inputs} inputs",
            data.len()
        )));
    }
    let mut rows = data
        .iter()
        .enumerate()
        .map(|(pos, d)| {
            Ok((
                d["index"].as_u64().unwrap_or(pos as u64),
                vector(&d["embedding"])?,
            ))
        })
        .collect::<Result<Vec<_>, UpstreamError>>()?;
    rows.sort_by_key(|(index, _)| *index);
    if rows
        .iter()
        .enumerate()
        .any(|(i, (index, _))| *index != i as u64)
    {
        return Err(UpstreamError::Protocol(format!(
            "embedding indexes are not 0 to {}",
            inputs.saturating_sub(1)
        )));
    }
    let usage = &v["usage"];
    Ok(Embeddings {
        vectors: rows.into_iter().map(|(_, vector)| vector).collect(),
        usage: usage
            .is_object()
            .then(|| Usage::new(usage["prompt_tokens"].as_u64().map_or(0, sat), 0)),
        model: v["model"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        rate: None,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tokio::spawn for the canned server
mod tests {
    use super::super::super::TraceHeaders;
    use super::super::super::canned::{self, http_response};
    /// Builds and sends, as the engine does in two steps.
    async fn embed_call(
        http: &crate::upstream::Client,
        t: &Target,
        req: &EmbedRequest,
        trace: &TraceHeaders,
    ) -> Result<Embeddings, UpstreamError> {
        let body = super::super::super::written(&embed_body(t, req)?)?;
        let t = super::super::super::Endpoint::new(t.clone());
        super::super::send_embed(http, &t, req, &body, trace).await
    }
    use super::super::tests::target;
    use super::*;

    fn ok(body: &str) -> String {
        http_response("200 OK", "content-type: application/json\r\n", body)
    }

    async fn serve_once(response: String) -> (String, tokio::task::JoinHandle<String>) {
        canned::serve_once(response, std::time::Duration::ZERO).await
    }

    /// The request's path line, headers (lowercase) and JSON body.
    fn split(seen: &str) -> (String, String, Value) {
        let (head, body) = seen.split_once("\r\n\r\n").expect("head");
        let line = head.lines().next().unwrap_or_default().to_string();
        let body = serde_json::from_str(body).expect("json body");
        (line, head.to_lowercase(), body)
    }

    fn texts(texts: &[&str]) -> EmbedRequest {
        EmbedRequest {
            inputs: texts
                .iter()
                .map(|t| EmbedInput::Text((*t).into()))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn embeds_over_http() {
        let http = crate::upstream::Client::new(std::time::Duration::from_secs(5));
        let req = EmbedRequest {
            dimensions: Some(3),
            user: Some("u-1".into()),
            extra: json!({"input_type": "query", "encoding_format": "float"})
                .as_object()
                .cloned(),
            ..texts(&["a", "b"])
        };
        // Out of order, as a server may send them.
        let answer = r#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[0.5,-1.0,2.25]},
            {"object":"embedding","index":0,"embedding":[1,0,-0.125]}],
            "model":"text-embedding-3-small","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        let (base, seen) = serve_once(ok(answer)).await;
        let e = embed_call(&http, &target(&base), &req, &TraceHeaders::default())
            .await
            .expect("embeds");
        let want = Embeddings {
            vectors: vec![vec![1.0, 0.0, -0.125], vec![0.5, -1.0, 2.25]],
            usage: Some(Usage::new(2, 0)),
            model: Some("text-embedding-3-small".into()),
            rate: None,
        };
        assert_eq!(e, want);
        let (line, head, body) = split(&seen.await.expect("server"));
        assert_eq!(line, "POST /v1/embeddings HTTP/1.1");
        for h in ["authorization: bearer sk-test", "x-org: acme"] {
            assert!(head.contains(h), "{h} missing in {head}");
        }
        let want = json!({"model": "m-1", "input": ["a", "b"], "encoding_format": "float",
            "dimensions": 3, "user": "u-1", "input_type": "query"});
        assert_eq!(body, want);

        // Base64 vectors, though floats were asked for; token-id inputs.
        let floats: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let answer = format!(
            r#"{{"data":[{{"index":0,"embedding":"{}"}}],"model":"e5","usage":{{"prompt_tokens":3}}}}"#,
            B64.encode(floats)
        );
        let (base, seen) = serve_once(ok(&answer)).await;
        let req = EmbedRequest {
            inputs: vec![EmbedInput::Tokens(vec![1, 2, 3])],
            ..Default::default()
        };
        let e = embed_call(&http, &target(&base), &req, &TraceHeaders::default())
            .await
            .expect("embeds");
        assert_eq!(e.vectors, [vec![1.5, -2.0, 0.25]]);
        assert_eq!(e.usage, Some(Usage::new(3, 0)));
        let (_, _, body) = split(&seen.await.expect("server"));
        let want = json!({"model": "m-1", "input": [[1, 2, 3]], "encoding_format": "float"});
        assert_eq!(body, want);
    }

    #[tokio::test]
    async fn mixed_inputs_are_unsupported_and_nothing_is_sent() {
        let req = EmbedRequest {
            inputs: vec![EmbedInput::Text("a".into()), EmbedInput::Tokens(vec![1])],
            ..Default::default()
        };
        // Nothing listens there: an attempt to send would be a Connect error.
        let t = target("http://127.0.0.1:9/v1");
        let err = embed_call(
            &crate::upstream::Client::new(std::time::Duration::from_secs(5)),
            &t,
            &req,
            &TraceHeaders::default(),
        )
        .await
        .expect_err("refused");
        assert!(matches!(err, UpstreamError::Unsupported(_)), "{err:?}");
    }

    #[test]
    fn bad_answers_are_protocol_errors() {
        let parse = |body: &str, n| parse_embeddings(body.as_bytes(), n);
        let protocol =
            |r: Result<Embeddings, UpstreamError>| matches!(r, Err(UpstreamError::Protocol(_)));
        let one = r#"{"data":[{"index":0,"embedding":[1]}]}"#;
        assert!(protocol(parse(one, 2)), "too few");
        assert!(protocol(parse(r#"{"data":[]}"#, 1)), "none");
        assert!(protocol(parse(r#"{"object":"list"}"#, 1)), "no data");
        let twice = r#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}"#;
        assert!(protocol(parse(twice, 2)), "an index twice");
        assert!(protocol(parse(
            r#"{"data":[{"index":0,"embedding":"AAA="}]}"#,
            1
        )));
        assert!(protocol(parse(
            r#"{"data":[{"index":0,"embedding":"!!"}]}"#,
            1
        )));
        assert!(protocol(parse(
            r#"{"data":[{"index":0,"embedding":["x"]}]}"#,
            1
        )));
        let e = parse(one, 1).expect("parses");
        assert_eq!((e.vectors, e.usage, e.model), (vec![vec![1.0]], None, None));
        assert!(matches!(
            parse(r#"{"error":{"message":"no such model"}}"#, 1),
            Err(UpstreamError::Event { message }) if message == "no such model"
        ));
    }
}
