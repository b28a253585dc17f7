//! Casebook's gRPC API, package `casebook.v1`: the messages and the tonic
//! clients and servers generated from `proto/casebook/v1/*.proto`.
//!
//! A client needs only this crate (and tonic's transport), not the engine:
//!
//! ```no_run
//! # async fn call() -> Result<(), Box<dyn std::error::Error>> {
//! use casebook_proto::v1::cases_client::CasesClient;
//! use casebook_proto::v1::GetCaseRequest;
//!
//! let mut cases = CasesClient::connect("http://127.0.0.1:50051").await?;
//! let mut request = tonic::Request::new(GetCaseRequest {
//!     case_id: "burglary-0193".into(),
//!     ..Default::default()
//! });
//! request
//!     .metadata_mut()
//!     .insert("authorization", "Bearer <token>".parse()?);
//! let case = cases.get_case(request).await?.into_inner();
//! println!("{} is {:?}", case.case_id, case.status());
//! # Ok(())
//! # }
//! ```

/// Version 1 of the API.
pub mod v1 {
    // The docs below come from the .proto comments, written for every
    // language's readers rather than for rustdoc.
    #![allow(clippy::all, missing_docs)]
    #![allow(
        rustdoc::broken_intra_doc_links,
        rustdoc::invalid_html_tags,
        rustdoc::bare_urls
    )]
    tonic::include_proto!("casebook.v1");
}

/// The encoded `FileDescriptorSet` of every Casebook `.proto` file (and the
/// well-known types they import), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/casebook_descriptor.bin"));
