//! The group robot webhook (on WeCom's host, keyed by the robot's `key`).

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::channels::wecom::api::WecomApi;
use crate::core::http::{field, ApiError};

/// A group robot client: WeCom's host and errcodes, authorised by the robot key in the query.
#[derive(Debug, Clone)]
pub struct RobotApi {
    wecom: WecomApi,
}

impl RobotApi {
    pub fn new(wecom: &WecomApi) -> Self {
        Self { wecom: wecom.clone() }
    }

    /// `POST cgi-bin/webhook/send?key=…`.
    pub async fn send(&self, key: &SecretString, body: &Value) -> Result<Value, ApiError> {
        self.wecom.post_query("webhook/send", &[("key", key.expose_secret())], body).await
    }

    /// `webhook/upload_media` (`file`, `voice`): a media id only this robot may send.
    pub async fn upload_media(
        &self,
        key: &SecretString,
        media_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let query = [("key", key.expose_secret()), ("type", media_type)];
        field(&self.wecom.upload("webhook/upload_media", &query, file_name, bytes).await?, "media_id")
    }
}
