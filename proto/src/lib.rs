//! The Switchyard gRPC contract, package `switchyard.v1`.
//!
//! # Layout
//! - `switchyard/v1/config.proto`: the resources (provider, pool, member,
//!   route), the resolved [`v1::Snapshot`] and [`v1::ChangeEvent`].
//! - `switchyard/v1/control_plane.proto`: the `ControlPlane` service.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection on every server.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("switchyard.v1");

    /// Redacting Debug: the inline secret is never printed.
    impl std::fmt::Debug for CredentialInput {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let source = match &self.source {
                None => "none",
                Some(credential_input::Source::Inline(_)) => "inline(*****)",
                Some(credential_input::Source::Reference(_)) => "reference",
            };
            f.debug_struct("CredentialInput")
                .field("source", &source)
                .finish()
        }
    }
}

/// Encoded `FileDescriptorSet` of every switchyard.v1 file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("switchyard_descriptor");

/// The RPC names of `service` (`switchyard.v1.ControlPlane`), as the
/// descriptor set declares them: how tests list every RPC, so a new one is
/// checked without anyone adding it to a test. Empty for an unknown service.
pub fn methods_of(service: &str) -> Vec<String> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .iter()
        .flat_map(|file| file.service.iter().map(move |svc| (file.package(), svc)))
        .filter(|(package, svc)| {
            service
                .strip_prefix(*package)
                .and_then(|s| s.strip_prefix('.'))
                == Some(svc.name())
        })
        .flat_map(|(_, svc)| svc.method.iter().map(|m| m.name().to_owned()))
        .collect()
}

/// gRPC reflection (v1 and v1alpha, for older grpcurl) over switchyard.v1
/// and grpc.health.v1, advertising only `service` (the one the server
/// serves, e.g. `switchyard.v1.ControlPlane`), health and reflection.
#[allow(clippy::type_complexity)]
pub fn reflection_services(
    service: &'static str,
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
