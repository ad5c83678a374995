//! The media store on S3: one bucket, content-addressed keys, presigned GET links.

use std::path::Path;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::core::ports::{MediaStore, PortError};

/// The bucket, on a client whose timeouts fit files of up to 100 MB (the SDK's shared
/// settings are cut for the callbacks' five seconds).
#[derive(Debug, Clone)]
pub struct S3MediaStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3MediaStore {
    /// The store in `bucket`. Against an emulator (`AWS_ENDPOINT_URL`), keys go in the path.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, emulator: bool) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(120))
            .operation_timeout(Duration::from_secs(300))
            .build();
        let config = aws_sdk_s3::config::Builder::from(sdk).timeout_config(timeouts).force_path_style(emulator).build();
        Self { client: aws_sdk_s3::Client::from_conf(config), bucket: bucket.to_owned() }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    async fn put(&self, key: &str, body: ByteStream, mime: &str) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(mime)
            .body(body)
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }
}

fn s3_err<E: std::error::Error>(err: E) -> PortError {
    PortError::new("S3", DisplayErrorContext(&err))
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn size(&self, key: &str) -> Result<Option<u64>, PortError> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(err) => Err(s3_err(err)),
        }
    }

    async fn put_file(&self, key: &str, path: &Path, mime: &str) -> Result<(), PortError> {
        self.put(key, ByteStream::from_path(path).await.map_err(|e| PortError::new("S3", e))?, mime).await
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, mime: &str) -> Result<(), PortError> {
        self.put(key, ByteStream::from(bytes), mime).await
    }

    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, PortError> {
        let object = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(err) => return Err(s3_err(err)),
        };
        let length = object.content_length().unwrap_or(0).max(0) as u64;
        if length > max {
            return Err(PortError::new("S3", format!("{key} is {length} bytes, over {max}")));
        }
        let bytes = object.body.collect().await.map_err(|e| PortError::new("S3", e))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn link(
        &self,
        key: &str,
        mime: &str,
        file_name: Option<&str>,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, PortError> {
        let presigning =
            PresigningConfig::builder().start_time(now).expires_in(ttl).build().map_err(|e| PortError::new("S3", e))?;
        let mut request = self.client.get_object().bucket(&self.bucket).key(key).response_content_type(mime);
        if let Some(name) = file_name {
            request = request.response_content_disposition(crate::core::media::attachment(name));
        }
        let presigned = request.presigned(presigning).await.map_err(s3_err)?;
        Ok(presigned.uri().to_owned())
    }
}
