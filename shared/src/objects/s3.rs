//! A bucket in S3 (aws-sdk-s3).

use async_trait::async_trait;
use aws_config::SdkConfig;
use bytes::Bytes;

use super::{ObjectError, ObjectStore};

/// A bucket in S3.
pub struct S3Objects {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// SSE-KMS with this key on every put; SSE-S3 (AES256) when `None`.
    kms_key: Option<String>,
}

impl S3Objects {
    pub fn new(client: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3Objects {
            client,
            bucket: bucket.to_owned(),
            kms_key: None,
        }
    }

    /// Puts encrypted with SSE-KMS under `key` (an ARN or id; the stack's `OBJECTS_KMS_KEY_ARN`),
    /// or with SSE-S3 when `None` or empty. The bucket policy refuses a put that asks for
    /// anything else.
    pub fn with_kms_key(mut self, key: Option<&str>) -> Self {
        self.kms_key = key.filter(|k| !k.is_empty()).map(str::to_owned);
        self
    }

    /// An S3 client from the shared SDK configuration. Path-style addressing when an endpoint
    /// is configured (`AWS_ENDPOINT_URL`: moto, a local stack), whose host names carry no
    /// bucket; virtual-hosted (S3's default) otherwise.
    pub fn client(sdk: &SdkConfig) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Every key under `prefix`, in S3's (lexicographic) order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failed)?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        Ok(keys)
    }
}

fn failed<E: std::error::Error + 'static>(e: E) -> ObjectError {
    ObjectError::Failed(aws_sdk_s3::error::DisplayErrorContext(e).to_string())
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        use aws_sdk_s3::types::ServerSideEncryption;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            // Create, never overwrite: S3 answers 412 when an object exists under the key.
            .if_none_match("*");
        let put = match &self.kms_key {
            Some(kms) => put
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms)
                .bucket_key_enabled(true),
            None => put.server_side_encryption(ServerSideEncryption::Aes256),
        };
        match put.body(body.into()).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Err(ObjectError::Exists)
            }
            Err(e) => Err(failed(e)),
        }
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, ObjectError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(ObjectError::Missing)
            }
            Err(e) => return Err(failed(e)),
        };
        let declared = out.content_length().unwrap_or(0).max(0) as u64;
        if declared > max_bytes {
            return Err(ObjectError::TooLarge(max_bytes));
        }
        // Read into one buffer of the declared size, chunk by chunk: the body is held once
        // (collecting it, then making it contiguous, then a Vec, held it three times).
        let mut body = out.body;
        let mut bytes = Vec::with_capacity(declared as usize);
        while let Some(chunk) = body.try_next().await.map_err(failed)? {
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                return Err(ObjectError::TooLarge(max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}
