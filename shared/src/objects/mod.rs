//! Objects in S3: the claim check and the archive.
//!
//! - **Claim check** (`PAYLOAD_BUCKET`): an envelope too large for the queue is written whole
//!   to the payload bucket, and the message carries a [`PayloadRef`] with the metadata and no
//!   content. The processor reads the object back ([`resolve`]) before any handler sees the
//!   envelope, so handlers never know the difference.
//! - **Archive** (`ARCHIVE_BUCKET`, off unless set): every accepted request's raw body and what
//!   was verified of it ([`ArchiveRecord`]), under `<provider>/<date>/…`, for
//!   `webhook-ops replay`. Never a header, the path or the query: the credentials travel there.
//!
//! Every object is written with its encryption requested explicitly (SSE-S3, or SSE-KMS with the
//! stack's key when `OBJECTS_KMS_KEY_ARN` is set; the template's bucket policy refuses a put
//! without it), lives under its provider's prefix, the only one that provider's function may
//! write (template: one `s3:PutObject` statement per receiver), and is created, never
//! overwritten: a message that names an object finds the bytes it was sent with.

mod archive;
mod claim_check;
mod memory;
mod s3;

pub use archive::{
    archive_day_prefix, archive_key, archive_key_time, archive_record, archive_request_id,
    ArchiveRecord,
};
pub use claim_check::{
    check, message_for, payload_key, resolve, Checked, Outbound, Oversize, PayloadObject,
    ResolveError, Unsendable,
};
pub use memory::MemoryObjects;
pub use s3::S3Objects;

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("no such object")]
    Missing,
    /// A put found an object under its key already: puts create, never overwrite.
    #[error("an object exists under that key; not overwritten")]
    Exists,
    #[error("object store failed: {0}")]
    Failed(String),
    /// Larger than the reader allowed: not read.
    #[error("object larger than {0} bytes")]
    TooLarge(u64),
}

/// A bucket, as the pipeline uses it.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Creates the object `key` holding `body`, encrypted at rest: `Ok` means the store has it
    /// durably. Never overwrites: when an object exists under `key` the put fails with
    /// [`ObjectError::Exists`] and the object stays as it was (S3: `If-None-Match: *`).
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError>;
    /// The object under `key`, when it is no larger than `max_bytes` (else `TooLarge`, without
    /// reading it): what a reader holds is bounded by what it expects, whatever the bucket holds.
    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, ObjectError>;
}
