//! WeCom's server API (`qyapi.weixin.qq.com`): access tokens, app messages, app group chats
//! and media uploads, and WeCom's errcode table.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::core::http::{base, field, ApiError, Http, IssuedToken};
use crate::core::retry::Verdict;

/// WeCom's API host.
pub const DEFAULT_BASE: &str = "https://qyapi.weixin.qq.com";
/// Overrides the host (tests and the sandbox point it at a fake).
pub const BASE_VAR: &str = "WXBRIDGE_WECOM_API_BASE";

/// WeCom's errcodes: what each means for a retry.
pub fn errcodes(code: i64) -> Verdict {
    match code {
        // System busy.
        -1 => Verdict::Transient { min_backoff_s: 0 },
        // Token invalid, expired or missing.
        40014 | 42001 | 41001 => Verdict::RefreshToken,
        // Frequency limits: the per-minute blocks last 60 s.
        45009 => Verdict::Transient { min_backoff_s: 60 },
        45033 => Verdict::Transient { min_backoff_s: 5 },
        // Invalid user, 60020 IP not allowed, bad parameters, unknown codes: not fixed by waiting.
        _ => Verdict::Permanent,
    }
}

/// The WeCom API client (shares the process's connection pool).
#[derive(Debug, Clone)]
pub struct WecomApi {
    http: Http,
    base: String,
}

impl WecomApi {
    pub fn new(http: &Http, base_url: &str) -> Self {
        Self { http: http.clone(), base: base(base_url) }
    }

    /// The process's HTTP client.
    pub fn client(&self) -> &reqwest::Client {
        self.http.client()
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/cgi-bin/{path}", self.base)
    }

    /// `GET cgi-bin/gettoken`.
    pub async fn token(&self, corp_id: &str, secret: &SecretString) -> Result<IssuedToken, ApiError> {
        let request = self
            .http
            .client()
            .get(self.url("gettoken"))
            .query(&[("corpid", corp_id), ("corpsecret", secret.expose_secret())]);
        IssuedToken::from_body(&Http::errcode_json(request).await?)
    }

    /// `POST cgi-bin/<path>?access_token=…` (message/send, appchat/*).
    pub async fn post(&self, path: &str, token: &SecretString, body: &Value) -> Result<Value, ApiError> {
        self.post_query(path, &[("access_token", token.expose_secret())], body).await
    }

    /// `POST cgi-bin/<path>?<query>` with a JSON body (the robot's query carries its key).
    pub async fn post_query(&self, path: &str, query: &[(&str, &str)], body: &Value) -> Result<Value, ApiError> {
        Http::errcode_json(self.http.client().post(self.url(path)).query(query).json(body)).await
    }

    /// `GET cgi-bin/<path>?access_token=…&…` (appchat/get).
    pub async fn get(&self, path: &str, token: &SecretString, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let request =
            self.http.client().get(self.url(path)).query(&[("access_token", token.expose_secret())]).query(query);
        Http::errcode_json(request).await
    }

    /// Uploads a file as multipart part `media`: `media/upload` (the query carries the access
    /// token) or the robot's `webhook/upload_media` (the query carries the key).
    pub async fn upload(
        &self,
        path: &str,
        query: &[(&str, &str)],
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<Value, ApiError> {
        let form = crate::core::http::media_form(file_name, bytes);
        let request = self.http.client().post(self.url(path)).query(query).multipart(form);
        Http::errcode_json(request.timeout(crate::core::media::DOWNLOAD_TIMEOUT)).await
    }

    /// `appchat/create`: a group chat of the app's members; returns its chat id.
    pub async fn appchat_create(
        &self,
        token: &SecretString,
        name: Option<&str>,
        owner: Option<&str>,
        members: &[&str],
        chat_id: Option<&str>,
    ) -> Result<String, ApiError> {
        let mut body = json!({"userlist": members});
        for (key, value) in [("name", name), ("owner", owner), ("chatid", chat_id)] {
            if let Some(value) = value {
                body[key] = value.into();
            }
        }
        field(&self.post("appchat/create", token, &body).await?, "chatid")
    }

    /// `appchat/update`: rename, add and remove members.
    pub async fn appchat_update(
        &self,
        token: &SecretString,
        chat_id: &str,
        name: Option<&str>,
        add: &[&str],
        remove: &[&str],
    ) -> Result<(), ApiError> {
        let mut body = json!({"chatid": chat_id, "add_user_list": add, "del_user_list": remove});
        if let Some(name) = name {
            body["name"] = name.into();
        }
        self.post("appchat/update", token, &body).await.map(drop)
    }

    /// `appchat/get`: the chat's `chat_info` (chatid, name, owner, userlist).
    pub async fn appchat_get(&self, token: &SecretString, chat_id: &str) -> Result<Value, ApiError> {
        let answer = self.get("appchat/get", token, &[("chatid", chat_id)]).await?;
        answer.get("chat_info").cloned().ok_or_else(|| ApiError::Decode("no chat_info in the answer".into()))
    }

    /// `media/upload` (`image`, `voice`, `video`, `file`): a media id valid 3 days.
    pub async fn media_upload(
        &self,
        token: &SecretString,
        media_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let query = [("access_token", token.expose_secret()), ("type", media_type)];
        field(&self.upload("media/upload", &query, file_name, bytes).await?, "media_id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errcode_table_decides_refresh_retry_or_give_up() {
        let cases = [
            (42001, Verdict::RefreshToken),
            (40014, Verdict::RefreshToken),
            (41001, Verdict::RefreshToken),
            (-1, Verdict::Transient { min_backoff_s: 0 }),
            (45009, Verdict::Transient { min_backoff_s: 60 }),
            (45033, Verdict::Transient { min_backoff_s: 5 }),
            (40003, Verdict::Permanent),
            (60020, Verdict::Permanent),
            (81013, Verdict::Permanent),
            // The Official Account's token code means something else here.
            (40001, Verdict::Permanent),
        ];
        for (code, verdict) in cases {
            assert_eq!(errcodes(code), verdict, "{code}");
        }
    }
}
