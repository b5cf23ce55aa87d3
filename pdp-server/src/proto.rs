//! The generated protobuf messages, gRPC clients and servers of `velro.authz.v1`
//! (`proto/velro/authz/v1/authz.proto`), and its file descriptor set for reflection.

tonic::include_proto!("velro.authz.v1");

/// Encoded file descriptor set of the API, served by the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/velro_authz_v1_descriptor.bin"));
