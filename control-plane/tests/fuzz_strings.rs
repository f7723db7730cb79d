//! Every string field of every ControlPlane RPC (nested resources, map
//! entries and update masks included), found from the service's own
//! descriptors, set to NUL, escape sequences and over-long values on top of
//! a valid request: the answer is never INTERNAL or UNKNOWN and never
//! echoes a raw control character. On Postgres and on SQLite.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use std::collections::HashMap;

use bytes::{Buf as _, BufMut as _};
use common::*;
use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use switchyard_proto::v1 as pb;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

both_backends!(no_string_field_of_any_rpc_gets_internal);

/// Bytes in, bytes out: requests are built as raw protobuf.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes that set the string at `path` (field numbers, outermost first)
/// to `value` when appended to an encoded message: a later scalar wins, a
/// later nested message merges.
fn override_bytes(path: &[i32], value: &[u8]) -> Vec<u8> {
    let mut inner = value.to_vec();
    for &field in path.iter().rev() {
        let mut wrapped = Vec::new();
        varint(((field as u64) << 3) | 2, &mut wrapped);
        varint(inner.len() as u64, &mut wrapped);
        wrapped.extend_from_slice(&inner);
        inner = wrapped;
    }
    inner
}

/// Every string field reachable from `message` (depth-limited), as paths.
fn string_paths(
    types: &HashMap<String, DescriptorProto>,
    message: &str,
    prefix: &[i32],
    names: &str,
    out: &mut Vec<(Vec<i32>, String)>,
) {
    if prefix.len() > 3 {
        return;
    }
    let Some(d) = types.get(message) else {
        return;
    };
    for f in &d.field {
        let mut path = prefix.to_vec();
        path.push(f.number());
        let name = format!("{names}{}", f.name());
        match f.r#type() {
            Type::String => out.push((path, name)),
            Type::Message => {
                string_paths(types, f.type_name(), &path, &format!("{name}."), out);
            }
            _ => {}
        }
    }
}

fn all_types(set: &FileDescriptorSet) -> HashMap<String, DescriptorProto> {
    fn walk(pkg: &str, d: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
        let full = format!("{pkg}.{}", d.name());
        for n in &d.nested_type {
            walk(&full, n, out);
        }
        out.insert(full, d.clone());
    }
    let mut out = HashMap::new();
    for f in &set.file {
        let pkg = format!(".{}", f.package());
        for d in &f.message_type {
            walk(&pkg, d, &mut out);
        }
    }
    out
}

async fn no_string_field_of_any_rpc_gets_internal(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let prov = create_provider(&mut c, openai_provider("prov", "sk-0123456789abcdef")).await;
    let chat = create_pool(&mut c, pool("chat")).await;
    let m = create_member(&mut c, member("chat", "prov", "m1")).await;
    let route = c
        .create_route(pb::CreateRouteRequest {
            route: Some(pb::Route {
                name: "r".into(),
                tiers: vec![pb::RouteTier {
                    target: Some(pb::route_tier::Target::Pool("chat".into())),
                    backup: false,
                    when: None,
                }],
                ..Default::default()
            }),
        })
        .await
        .expect("route")
        .into_inner();
    let svc = pb::Caller {
        name: "svc".into(),
        description: "a service".into(),
        models: vec!["chat".into()],
        labels: [("team".to_owned(), "search".to_owned())].into(),
        certificate_subject: "svc.internal".into(),
        ..Default::default()
    };
    let caller = c
        .create_caller(pb::CreateCallerRequest {
            caller: Some(svc.clone()),
        })
        .await
        .expect("caller")
        .into_inner()
        .caller
        .expect("caller");

    // A valid request for every unary RPC: the fuzzed field is the only fault.
    let get = |k: &str| {
        pb::GetRequest {
            id_or_name: k.into(),
        }
        .encode_to_vec()
    };
    let provider_paths = ["name", "base_url", "credential", "extra_headers", "enabled"];
    let bases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CreateProvider",
            pb::CreateProviderRequest {
                provider: Some(openai_provider("fresh-prov", "sk-0123456789abcdef")),
            }
            .encode_to_vec(),
        ),
        ("GetProvider", get("prov")),
        (
            "ListProviders",
            pb::ListProvidersRequest::default().encode_to_vec(),
        ),
        (
            "UpdateProvider",
            pb::UpdateProviderRequest {
                provider: Some(pb::Provider {
                    id: prov.id.clone(),
                    ..openai_provider("prov", "sk-0123456789abcdef")
                }),
                update_mask: mask(&provider_paths),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteProvider",
            pb::DeleteProviderRequest {
                id_or_name: "no-such-provider".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "CreatePool",
            pb::CreatePoolRequest {
                pool: Some(pb::Pool {
                    allow_request_extra: Some(false),
                    ..pool("fresh-pool")
                }),
            }
            .encode_to_vec(),
        ),
        ("GetPool", get("chat")),
        ("ListPools", pb::ListPoolsRequest::default().encode_to_vec()),
        (
            "UpdatePool",
            pb::UpdatePoolRequest {
                pool: Some(pb::Pool {
                    id: chat.id.clone(),
                    allow_request_extra: Some(true),
                    ..pool("chat")
                }),
                update_mask: mask(&["name", "description", "enabled", "allow_request_extra"]),
            }
            .encode_to_vec(),
        ),
        (
            "DeletePool",
            pb::DeletePoolRequest {
                id_or_name: "no-such-pool".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "CreateMember",
            pb::CreateMemberRequest {
                member: Some(pb::Member {
                    max_output_tokens: Some(4096),
                    ..member("chat", "prov", "m2")
                }),
            }
            .encode_to_vec(),
        ),
        ("GetMember", get(&m.id)),
        (
            "ListMembers",
            pb::ListMembersRequest {
                pool: "chat".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "UpdateMember",
            pb::UpdateMemberRequest {
                member: Some(pb::Member {
                    id: m.id.clone(),
                    upstream_model: "m1".into(),
                    weight: 1,
                    max_output_tokens: Some(2048),
                    ..Default::default()
                }),
                update_mask: mask(&["upstream_model", "weight", "max_output_tokens"]),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteMember",
            pb::DeleteMemberRequest {
                id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "CreateRoute",
            pb::CreateRouteRequest {
                route: Some(pb::Route {
                    name: "fresh-route".into(),
                    tiers: vec![pb::RouteTier {
                        target: Some(pb::route_tier::Target::Direct("prov/x".into())),
                        backup: false,
                        when: None,
                    }],
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        ),
        ("GetRoute", get("r")),
        (
            "ListRoutes",
            pb::ListRoutesRequest::default().encode_to_vec(),
        ),
        (
            "UpdateRoute",
            pb::UpdateRouteRequest {
                route: Some(pb::Route {
                    id: route.id.clone(),
                    name: "r".into(),
                    tiers: route.tiers.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["name", "tiers", "description"]),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteRoute",
            pb::DeleteRouteRequest {
                id_or_name: "no-such-route".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "GetSnapshot",
            pb::GetSnapshotRequest::default().encode_to_vec(),
        ),
        (
            "ApplyConfig",
            pb::ApplyConfigRequest {
                config: Some(pb::ConfigDocument {
                    providers: vec![pb::Provider {
                        credential: Some(pb::CredentialInput {
                            source: Some(pb::credential_input::Source::Reference(
                                "env:SWITCHYARD_CRED_OPENAI".into(),
                            )),
                        }),
                        ..openai_provider("prov", "unused")
                    }],
                    pools: vec![pool("chat")],
                    members: vec![member("chat", "prov", "m1")],
                    routes: vec![pb::Route {
                        name: "r".into(),
                        tiers: vec![pb::RouteTier {
                            target: Some(pb::route_tier::Target::Pool("chat".into())),
                            backup: false,
                            when: None,
                        }],
                        ..Default::default()
                    }],
                }),
                dry_run: true,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ExportConfig",
            pb::ExportConfigRequest::default().encode_to_vec(),
        ),
        (
            "CreateCaller",
            pb::CreateCallerRequest {
                caller: Some(pb::Caller {
                    name: "fresh-svc".into(),
                    ..svc.clone()
                }),
            }
            .encode_to_vec(),
        ),
        ("GetCaller", get("svc")),
        (
            "ListCallers",
            pb::ListCallersRequest::default().encode_to_vec(),
        ),
        (
            "UpdateCaller",
            pb::UpdateCallerRequest {
                caller: Some(pb::Caller {
                    id: caller.id.clone(),
                    ..svc.clone()
                }),
                update_mask: mask(&[
                    "name",
                    "description",
                    "models",
                    "labels",
                    "certificate_subject",
                ]),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteCaller",
            pb::DeleteCallerRequest {
                id_or_name: "no-such-caller".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "RotateCallerKey",
            pb::RotateCallerKeyRequest {
                id_or_name: "svc".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];

    let set =
        FileDescriptorSet::decode(switchyard_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let types = all_types(&set);
    let service = set
        .file
        .iter()
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "ControlPlane")
        .expect("ControlPlane service");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", cp.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let values: [&[u8]; 5] = [
        b"a\x00b",
        b"not utf-8 \xff\xfe",
        b"\x1b[2J\x07",
        &[b'x'; 5000],
        "sk-live-0123456789abcdefABCDEF".as_bytes(),
    ];
    let mut calls = 0;
    let mut covered = Vec::new();
    for method in &service.method {
        if method.server_streaming() {
            continue; // WatchChanges: no string fields.
        }
        let name = method.name();
        let base = bases
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("no base request for {name}: add one"));
        let mut paths = Vec::new();
        string_paths(&types, method.input_type(), &[], "", &mut paths);
        for (path, field) in &paths {
            for v in values {
                let mut body = base.clone();
                body.extend(override_bytes(path, v));
                let mut req = tonic::Request::new(body);
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {ADMIN}").parse().expect("header"),
                );
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.expect("ready");
                let path_and_query: http::uri::PathAndQuery =
                    format!("/switchyard.v1.ControlPlane/{name}")
                        .parse()
                        .expect("path");
                let r = grpc.unary(req, path_and_query, Raw).await;
                calls += 1;
                if let Err(s) = r {
                    assert!(
                        !matches!(s.code(), Code::Internal | Code::Unknown),
                        "{name} with {field} = {:?}…: {s:?}",
                        String::from_utf8_lossy(&v[..v.len().min(16)])
                    );
                    assert!(
                        !s.message().chars().any(char::is_control),
                        "{name} {field}: a raw control character in {:?}",
                        s.message()
                    );
                    assert!(
                        s.message().len() < 1000,
                        "{name} {field}: a message of {} bytes",
                        s.message().len()
                    );
                    assert!(
                        !s.message().contains("0123456789abcdefABCDEF"),
                        "{name} {field}: a credential-shaped value echoed: {:?}",
                        s.message()
                    );
                }
            }
            covered.push(format!("{name}.{field}"));
        }
    }
    assert!(calls > 200, "{calls} calls");
    for must in [
        "GetPool.id_or_name",
        "CreateProvider.provider.base_url",
        "CreateProvider.provider.extra_headers.key",
        "UpdatePool.update_mask.paths",
        "CreateRoute.route.tiers.direct",
        "ListMembers.pool",
    ] {
        assert!(
            covered.iter().any(|c| c == must),
            "{must} fuzzed: {covered:?}"
        );
    }
}
