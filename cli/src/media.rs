//! The media step in `wxbridge dev`: without `--aws`, files go to a temp folder that
//! `GET /media/<sha256>` serves until each link's `expires`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::adapters::memory::MemoryTokenStore;
use shared::channels::{Apis, Config, MediaSources};
use shared::core::config::Env;
use shared::core::ports::{Clock as _, MediaStore, Publisher, QueueMessage, Record, SystemClock};
use shared::core::tokens::Tokens;
use shared::services::media::{MediaService, MediaSettings};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::sqs::BatchHandler;
use shared::adapters::folder::FolderMediaStore;

#[async_trait::async_trait]
impl BatchHandler for MediaService {
    async fn handle_batch(&self, records: &[Record]) -> Vec<String> {
        MediaService::handle_batch(self, records).await
    }
}

/// The media step on `store`, passing resolved messages to `inbound`.
pub fn memory_media(
    config: &Config,
    env: &Env,
    store: Arc<dyn MediaStore>,
    inbound: Arc<dyn Publisher>,
) -> anyhow::Result<MediaService> {
    let apis = Apis::from_env(env)?;
    let tokens = Arc::new(Tokens::new(Arc::new(MemoryTokenStore::default()), Arc::new(SystemClock)));
    Ok(MediaService {
        sources: Arc::new(MediaSources::new(config, &apis, &tokens, MediaSources::trusted_hosts(env))),
        store,
        inbound,
        clock: Arc::new(SystemClock),
        settings: MediaSettings::default(),
        requeue: None,
        max_receives: Some(MEMORY_TRIES),
    })
}

/// Tries per message, as the media queue's receives on AWS.
const MEMORY_TRIES: u32 = 6;

/// Resolves each message of the in-memory media queue, retrying a failed fetch as SQS would.
pub async fn run_memory(service: Arc<MediaService>, mut rx: UnboundedReceiver<QueueMessage>) {
    while let Some(message) = rx.recv().await {
        let service = service.clone();
        tokio::spawn(async move {
            for attempt in 1..=MEMORY_TRIES {
                let id = shared::core::ports::claim_token();
                let record = Record {
                    message_id: id.clone(),
                    receipt_handle: id,
                    body: message.body.clone(),
                    receive_count: attempt,
                    group: None,
                };
                let handled = {
                    let _working = crate::trace::working_on_inbound(crate::feed::Stage::Media, &record.body);
                    service.handle(&record).await
                };
                match handled {
                    Ok(()) => return,
                    Err(err) => {
                        println!("media ✗ {err} (try {attempt} of {MEMORY_TRIES})");
                        tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
                    }
                }
            }
        });
    }
}

/// `GET /media/<sha256>?expires=…` of the media folder (none with `--aws`: files are in S3).
pub fn routes<S: Clone + Send + Sync + 'static>(folder: Option<FolderMediaStore>) -> axum::Router<S> {
    axum::Router::new().route("/media/{sha256}", axum::routing::get(serve)).with_state(Arc::new(folder))
}

/// `GET /media/<sha256>?expires=…`: a stored file, until its link expires.
async fn serve(
    State(folder): State<Arc<Option<FolderMediaStore>>>,
    Path(sha256): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(store) = folder.as_ref() else {
        return (StatusCode::NOT_FOUND, "media is in the S3 bucket with --aws\n").into_response();
    };
    let expires = query.get("expires").and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
    if expires < SystemClock.unix() {
        return (StatusCode::FORBIDDEN, "this link has expired\n").into_response();
    }
    let Some(path) = store.file(&format!("media/{sha256}")) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let mime = query
        .get("type")
        .cloned()
        .filter(|m| m.parse::<mime_ok::Checked>().is_ok())
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut response = (StatusCode::OK, bytes).into_response();
    if let Ok(value) = mime.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if let Some(name) = query.get("name").map(String::as_str).and_then(shared::core::media::clean_file_name) {
        if let Ok(value) = shared::core::media::attachment(&name).parse() {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}

mod mime_ok {
    /// A MIME type of the `type/subtype` shape, nothing else.
    pub struct Checked;

    impl std::str::FromStr for Checked {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            let ok =
                |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            match s.split_once('/') {
                Some((a, b)) if ok(a) && ok(b) => Ok(Checked),
                _ => Err(()),
            }
        }
    }
}
