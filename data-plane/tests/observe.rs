//! What operators see, against the real worker binary: Prometheus metrics
//! scraped over HTTP after a failover, the trace it exports over OTLP (to a
//! collector's trace service on loopback) and passes on to the upstream,
//! and pool statistics that add up across three workers.
// Tests spawn servers freely.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use switchyard_proto::v1 as pb;
use switchyard_testkit::certs::TestCerts;

/// A collector's trace service that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("lock");
        for rs in r.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    async fn start(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// The same service over TLS, with a certificate `certs`' CA signed.
    async fn start_tls(&self, certs: &TestCerts) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&certs.server_pem, &certs.server_key_pem),
        );
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(TraceServiceServer::new(self.clone()));
        tokio::spawn(
            server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// OTLP/HTTP: protobuf bodies POSTed to `/v1/traces`.
    async fn start_http(&self) -> std::net::SocketAddr {
        use prost::Message as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let me = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let me = me.clone();
                async move {
                    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let _ = me.export(tonic::Request::new(req)).await;
                    (
                        axum::http::StatusCode::OK,
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().expect("lock").clone()
    }

    /// Waits (bounded) until `n` attempt spans arrived.
    async fn attempt_spans(&self, n: usize) -> Vec<Span> {
        let mut spans = Vec::new();
        for _ in 0..100 {
            spans = self.spans();
            if spans
                .iter()
                .filter(|s| attr(s, "switchyard.outcome").is_some())
                .count()
                >= n
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        spans
    }
}

/// The trace of `rpcs` traced requests that failed over from a to b: one
/// RPC span each, continuing the caller's span, with two attempt spans.
fn assert_failover_traces(spans: &[Span], rpcs: usize) {
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let rpc: Vec<&&Span> = ours.iter().filter(|s| s.name == "generate p").collect();
    assert_eq!(
        rpc.len(),
        rpcs,
        "one RPC span per traced request: {:?}",
        names(spans)
    );
    for r in &rpc {
        // Under the RPC's server span, which continues the caller's span.
        let server = ours
            .iter()
            .find(|s| s.span_id == r.parent_span_id)
            .expect("the RPC's server span");
        assert_eq!(server.name, "switchyard.v1.Inference/Generate");
        assert_eq!(
            hex(&server.parent_span_id),
            CALLER_SPAN,
            "continues the caller's span"
        );
        assert_eq!(attr(r, "gen_ai.response.model").as_deref(), Some("b"));
        let children: Vec<&&Span> = ours
            .iter()
            .filter(|s| s.parent_span_id == r.span_id)
            .collect();
        let mut outcomes: Vec<(String, String)> = children
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    attr(s, "switchyard.outcome").unwrap_or_default(),
                )
            })
            .collect();
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![
                ("chat a".to_owned(), "transient".to_owned()),
                ("chat b".to_owned(), "ok".to_owned())
            ],
            "two attempt spans under the RPC span"
        );
        let a = children.iter().find(|s| s.name == "chat a").expect("a");
        assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("503"));
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(v) => Some(v.clone()),
            AnyValue::IntValue(v) => Some(v.to_string()),
            AnyValue::BoolValue(v) => Some(v.to_string()),
            AnyValue::DoubleValue(v) => Some(v.to_string()),
            _ => None,
        }
    })
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traced<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("header"),
    );
    r
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn a_failover_shows_in_the_metrics_and_in_one_trace_from_caller_to_provider() {
    let collector = Collector::default();
    let otlp = collector.start().await;
    let endpoint = format!("http://{otlp}");
    // Member a (tried first) answers 503 every time; b serves. No bench:
    // the threshold is far away.
    let s = setup(
        policy(0, 100, 1000),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SWITCHYARD_TRACE_METADATA_KEYS", "team"),
        ],
    )
    .await;
    s.fake.set_fault("a", status(503));
    let mut c = client(&s.worker).await;
    for i in 0..3 {
        let mut ask = ask("p", "hi");
        ask.metadata.insert("team".into(), "search".into());
        ask.metadata
            .insert("user_email".into(), "x@example.com".into());
        let r = c.generate(traced(ask)).await.expect("served by b");
        assert_eq!(
            r.get_ref().served_by.as_ref().map(|s| s.member_id.as_str()),
            Some("p-b"),
            "request {i}"
        );
    }
    // The upstream saw the caller's trace, with the attempt's span as parent.
    let h = s.fake.last_headers("b").expect("b was called");
    let tp = h
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("traceparent sent upstream")
        .to_owned();
    assert!(tp.contains(TRACE_ID), "{tp}");
    assert!(
        !tp.contains(CALLER_SPAN),
        "the parent is Switchyard's attempt span: {tp}"
    );

    let stream = c
        .generate_stream(ask("p", "stream"))
        .await
        .expect("stream opens")
        .into_inner();
    let (events, _) = drain_ok(stream).await;
    assert!(!events.is_empty());
    let mut empty = ask("p", "x");
    empty.messages.clear();
    let err = c.generate(empty).await.expect_err("no messages");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Metrics, scraped over HTTP.
    let m = scrape(&s.worker).await;
    let v = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels).unwrap_or(0.0);
    assert_eq!(
        v(
            "switchyard_requests_total",
            &[("model", "p"), ("status", "ok")]
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        v(
            "switchyard_requests_total",
            &[("model", "p"), ("status", "invalid_argument")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "switchyard_attempts_total",
            &[("pool", "p"), ("member", "p-a"), ("outcome", "transient")]
        ),
        4.0
    );
    assert_eq!(
        v(
            "switchyard_attempts_total",
            &[("pool", "p"), ("member", "p-b"), ("outcome", "ok")]
        ),
        4.0
    );
    assert_eq!(v("switchyard_failovers_total", &[("pool", "p")]), 4.0);
    assert_eq!(
        v(
            "gen_ai_client_operation_duration_seconds_count",
            &[
                ("gen_ai_request_model", "a"),
                ("error_type", "transient"),
                ("gen_ai_provider_name", "up")
            ]
        ),
        4.0
    );
    assert_eq!(
        v(
            "gen_ai_server_request_duration_seconds_count",
            &[
                ("gen_ai_request_model", "p"),
                ("gen_ai_response_model", "b"),
                ("error_type", "")
            ]
        ),
        4.0
    );
    assert_eq!(
        v(
            "gen_ai_server_time_to_first_token_seconds_count",
            &[("gen_ai_request_model", "p")]
        ),
        1.0,
        "only the stream has a time to first token"
    );
    assert!(
        v(
            "gen_ai_client_token_usage_sum",
            &[("gen_ai_token_type", "output"), ("pool", "p")]
        ) > 0.0,
        "{m}"
    );
    assert_eq!(v("switchyard_inflight_requests", &[]), 0.0);
    assert_eq!(
        v(
            "switchyard_member_state",
            &[("member", "p-a"), ("state", "available")]
        ),
        1.0
    );
    assert_eq!(v("switchyard_config_revision", &[]), 1.0);
    assert_eq!(v("switchyard_config_live", &[]), 1.0);
    assert_eq!(v("switchyard_fleet_state_up", &[]), 1.0);
    assert!(
        v(
            "switchyard_redis_call_duration_seconds_count",
            &[("op", "lease")]
        ) >= 1.0,
        "the round-robin lease is timed: {m}"
    );

    // The trace, as the collector received it.
    let spans = collector.attempt_spans(8).await;
    assert_failover_traces(&spans, 3);
    for r in spans
        .iter()
        .filter(|s| s.name == "generate p" && hex(&s.trace_id) == TRACE_ID)
    {
        assert_eq!(
            attr(r, "metadata").as_deref(),
            Some("team=search"),
            "allow-listed keys only"
        );
    }
    assert!(
        !spans.iter().any(|s| s
            .attributes
            .iter()
            .any(|a| format!("{:?}", a.value).contains("x@example.com"))),
        "metadata outside the allow-list never reaches a span"
    );
}

fn names(spans: &[Span]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} {}", s.name, hex(&s.trace_id)))
        .collect()
}

#[tokio::test]
async fn pool_statistics_add_up_what_three_workers_served() {
    let fake = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider(
            "up",
            pb::ProviderKind::Openai,
            &fake.base_url(),
            Some("sk-stats-0000"),
        )
        .pool(
            "p",
            pb::Strategy::RoundRobin,
            policy(0, 100, 1000),
            &[("up", "a", 0), ("up", "b", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            worker(
                &redis_url(),
                &prefix,
                &[("SWITCHYARD_STATS_FLUSH_MS", "200")],
            )
            .await,
        );
    }
    let (mut input, mut output, mut sent) = (0u64, 0u64, 0u64);
    for (i, w) in workers.iter().enumerate() {
        wait_revision(w, 1).await;
        let mut c = client(w).await;
        for _ in 0..(2 + i) {
            let r = c.generate(ask("p", "count me")).await.expect("served");
            let u = r.get_ref().usage.expect("usage");
            input += u64::from(u.input_tokens);
            output += u64::from(u.output_tokens);
            sent += 1;
        }
    }
    assert_eq!(sent, 9);
    let mut c = client(&workers[0]).await;
    let mut stats = None;
    for _ in 0..50 {
        let r = c
            .get_pool_stats(pb::GetPoolStatsRequest {
                pool: "p".into(),
                window_seconds: 300,
            })
            .await
            .expect("stats")
            .into_inner();
        if r.pools.first().is_some_and(|p| p.requests == sent) {
            stats = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = stats.expect("every worker's requests reach the fleet's statistics");
    let p = &stats.pools[0];
    assert_eq!(p.pool, "p");
    assert_eq!((p.failed, p.failovers), (0, 0));
    assert_eq!((p.input_tokens, p.output_tokens), (input, output));
    assert_eq!(p.latency.as_ref().map(|l| l.count), Some(sent));
    let served: u64 = p.members.iter().map(|m| m.served).sum();
    let attempts: u64 = p.members.iter().map(|m| m.attempts).sum();
    assert_eq!((served, attempts), (sent, sent));
    assert!(
        p.members
            .iter()
            .all(|m| m.served > 0 && m.state == "available"),
        "{p:?}"
    );
    let member_tokens: u64 = p.members.iter().map(|m| m.input_tokens).sum();
    assert_eq!(member_tokens, input);

    // Mistakes are named.
    let err = c
        .get_pool_stats(pb::GetPoolStatsRequest {
            pool: "p".into(),
            window_seconds: 5,
        })
        .await
        .expect_err("window too short");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("60 to 3600"), "{}", err.message());
    let err = c
        .get_pool_stats(pb::GetPoolStatsRequest {
            pool: "nope".into(),
            window_seconds: 0,
        })
        .await
        .expect_err("unknown pool");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// One traced request that fails over from a to b, through a worker with `env`.
async fn one_failover_traced(env: &[(&str, &str)]) -> Setup {
    let s = setup(policy(0, 100, 1000), env).await;
    s.fake.set_fault("a", status(503));
    let mut c = client(&s.worker).await;
    c.generate(traced(ask("p", "hi")))
        .await
        .expect("served by b");
    s
}

#[tokio::test]
async fn traces_reach_an_otlp_http_collector() {
    let collector = Collector::default();
    let addr = collector.start_http().await;
    let endpoint = format!("http://{addr}");
    let _s = one_failover_traced(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    assert_failover_traces(&collector.attempt_spans(2).await, 1);
}

#[tokio::test]
async fn traces_reach_a_tls_collector_verified_by_the_ca_file() {
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).expect("write CA");
    // Without the CA, the collector's certificate is not trusted: nothing arrives.
    let untrusted = Collector::default();
    let addr = untrusted.start_tls(&certs).await;
    let endpoint = format!("https://localhost:{}", addr.port());
    let _w = one_failover_traced(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        untrusted.spans().is_empty(),
        "an unverified collector gets no spans"
    );

    let collector = Collector::default();
    let addr = collector.start_tls(&certs).await;
    let endpoint = format!("https://localhost:{}", addr.port());
    let ca = ca.display().to_string();
    let _s = one_failover_traced(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    assert_failover_traces(&collector.attempt_spans(2).await, 1);
}

#[tokio::test]
async fn a_caller_that_leaves_midway_still_counts_what_was_tried() {
    // a refuses (503), b is slow: the caller gives up while b is being tried.
    let s = setup(policy(0, 100, 1000), &[]).await;
    s.fake.set_fault("a", status(503));
    s.fake
        .set_fault("b", Fault::DelayFirstByte(Duration::from_secs(3)));
    let mut c = client(&s.worker).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(500),
        c.generate(ask("p", "never mind")),
    )
    .await;
    assert!(gave_up.is_err(), "the caller left before an answer");
    let mut m = String::new();
    for _ in 0..50 {
        m = scrape(&s.worker).await;
        if sample(&m, "switchyard_requests_total", &[("status", "cancelled")]).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = |name: &str, labels: &[(&str, &str)]| sample(&m, name, labels).unwrap_or(0.0);
    assert_eq!(
        v(
            "switchyard_requests_total",
            &[("model", "p"), ("status", "cancelled")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        v(
            "switchyard_attempts_total",
            &[("member", "p-a"), ("outcome", "transient")]
        ),
        1.0,
        "the attempt made before the caller left counts"
    );
    assert_eq!(
        v(
            "switchyard_attempts_total",
            &[("member", "p-b"), ("outcome", "cancelled")]
        ),
        1.0,
        "the attempt cut short counts as cancelled"
    );
    assert_eq!(v("switchyard_inflight_requests", &[]), 0.0);
    assert_eq!(
        v("switchyard_member_inflight_requests", &[("member", "p-b")]),
        0.0
    );
}

/// A call through the HTTP door is one trace too: its server span
/// continues the caller's `traceparent`, the RPC and attempt spans nest in
/// it, and the upstream sees the same trace.
/// The usual setup, with the HTTP door on and spans sent to `collector`.
async fn with_door_traced(collector: &Collector) -> Setup {
    let otlp = collector.start().await;
    let endpoint = format!("http://{otlp}");
    setup(
        policy(0, 100, 1000),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_call_through_the_http_door_continues_the_callers_trace() {
    let collector = Collector::default();
    let s = with_door_traced(&collector).await;
    s.fake.set_fault("a", status(503));
    let door = http_addr(&s.worker).await;
    let r = reqwest::Client::new()
        .post(format!("http://{door}/v1/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("the door answers");
    assert_eq!(r.status(), 200);
    let tp = s
        .fake
        .last_headers("b")
        .and_then(|h| {
            h.get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .expect("traceparent sent upstream");
    assert!(tp.contains(TRACE_ID), "{tp}");
    let spans = collector.attempt_spans(2).await;
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let server = ours
        .iter()
        .find(|s| s.name == "POST /v1/chat/completions")
        .unwrap_or_else(|| panic!("the door's server span: {:?}", names(&spans)));
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "continues the caller's span"
    );
    let rpc = ours
        .iter()
        .find(|s| s.name == "generate p")
        .expect("the request's span");
    assert_eq!(
        rpc.parent_span_id, server.span_id,
        "nested in the door's span"
    );
    assert_eq!(
        ours.iter()
            .filter(|s| s.parent_span_id == rpc.span_id)
            .count(),
        2,
        "two attempt spans"
    );
}

/// Embeddings, by gRPC and through the HTTP door, are `embeddings` in the
/// GenAI metrics and spans, not `chat`.
#[tokio::test]
async fn embeddings_are_labelled_embeddings_in_metrics_and_spans() {
    let collector = Collector::default();
    let s = with_door_traced(&collector).await;
    let mut c = client(&s.worker).await;
    c.embed(pb::EmbedRequest {
        model: "p".into(),
        inputs: vec![pb::EmbedInput {
            input: Some(pb::embed_input::Input::Text("hello".into())),
        }],
        ..Default::default()
    })
    .await
    .expect("embedded over gRPC");
    let door = http_addr(&s.worker).await;
    let r = reqwest::Client::new()
        .post(format!("http://{door}/v1/embeddings"))
        .json(&serde_json::json!({"model": "p", "input": "hello"}))
        .send()
        .await
        .expect("the door answers");
    assert_eq!(r.status(), 200);
    let m = scrape(&s.worker).await;
    for name in [
        "gen_ai_server_request_duration_seconds_count",
        "gen_ai_client_operation_duration_seconds_count",
    ] {
        let op = |o: &str| sample(&m, name, &[("gen_ai_operation_name", o)]);
        assert_eq!(op("embeddings"), Some(2.0), "{name}:\n{m}");
        assert_eq!(op("chat"), None, "{name}:\n{m}");
    }
    let spans = collector.attempt_spans(2).await;
    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| attr(s, "switchyard.outcome").is_some())
        .collect();
    assert_eq!(attempts.len(), 2, "{:?}", names(&spans));
    for a in attempts {
        assert_eq!(
            attr(a, "gen_ai.operation.name").as_deref(),
            Some("embeddings")
        );
        assert_eq!(a.name, "embeddings a");
    }
}
