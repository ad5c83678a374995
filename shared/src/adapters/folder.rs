//! The media store of `wxbridge dev`: a local folder, whose files `dev` serves at
//! `{base_url}/media/<sha256>` until the link's `expires`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::core::media::is_content_key;
use crate::core::ports::{MediaStore, PortError};

#[derive(Debug, Clone)]
pub struct FolderMediaStore {
    dir: PathBuf,
    base_url: String,
}

impl FolderMediaStore {
    /// Files go in `dir` (created if missing); links start with `base_url`.
    pub fn new(dir: &Path, base_url: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_owned(), base_url: base_url.trim_end_matches('/').to_owned() })
    }

    /// The file of a content key; `None` for any other key (so no key reaches outside `dir`).
    pub fn file(&self, key: &str) -> Option<PathBuf> {
        is_content_key(key).then(|| self.dir.join(key.trim_start_matches("media/")))
    }

    fn file_or_err(&self, key: &str) -> Result<PathBuf, PortError> {
        self.file(key).ok_or_else(|| PortError::new("media folder", "not a content key"))
    }
}

fn io_err(err: std::io::Error) -> PortError {
    PortError::new("media folder", err)
}

#[async_trait]
impl MediaStore for FolderMediaStore {
    async fn size(&self, key: &str) -> Result<Option<u64>, PortError> {
        match tokio::fs::metadata(self.file_or_err(key)?).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_err(err)),
        }
    }

    async fn put_file(&self, key: &str, path: &Path, _mime: &str) -> Result<(), PortError> {
        let target = self.file_or_err(key)?;
        // Copy next to the target, then rename: a reader never sees half a file.
        let partial = target.with_extension(crate::core::ports::claim_token());
        tokio::fs::copy(path, &partial).await.map_err(io_err)?;
        tokio::fs::rename(&partial, &target).await.map_err(io_err)
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>, _mime: &str) -> Result<(), PortError> {
        let target = self.file_or_err(key)?;
        let partial = target.with_extension(crate::core::ports::claim_token());
        tokio::fs::write(&partial, bytes).await.map_err(io_err)?;
        tokio::fs::rename(&partial, &target).await.map_err(io_err)
    }

    async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, PortError> {
        let Some(size) = self.size(key).await? else { return Ok(None) };
        if size > max {
            return Err(PortError::new("media folder", format!("{key} is {size} bytes, over {max}")));
        }
        tokio::fs::read(self.file_or_err(key)?).await.map(Some).map_err(io_err)
    }

    async fn link(
        &self,
        key: &str,
        mime: &str,
        file_name: Option<&str>,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<String, PortError> {
        self.file_or_err(key)?;
        let expires = crate::core::ports::unix_millis(now + ttl) / 1000;
        let mut query = vec![("expires", expires.to_string()), ("type", mime.to_owned())];
        if let Some(name) = file_name {
            query.push(("name", name.to_owned()));
        }
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC))
            })
            .collect();
        Ok(format!("{}/{key}?{}", self.base_url, query.join("&")))
    }
}
