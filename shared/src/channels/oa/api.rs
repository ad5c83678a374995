//! The Official Account server API (`api.weixin.qq.com`): stable access tokens, customer-service
//! messages and typing, temporary media (download and upload), and the Official Account's errcode table.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::core::http::{base, ApiError, Http, IssuedToken};
use crate::core::retry::{Verdict, MAX_BACKOFF_S};

/// The Official Account API host.
pub const DEFAULT_BASE: &str = "https://api.weixin.qq.com";
/// Overrides the host (tests and the sandbox point it at a fake).
pub const BASE_VAR: &str = "WXBRIDGE_OA_API_BASE";

/// The Official Account's errcodes: what each means for a retry.
pub fn errcodes(code: i64) -> Verdict {
    match code {
        // System busy.
        -1 => Verdict::Transient { min_backoff_s: 0 },
        // Token invalid, expired or missing (40001 also for a token that is not the latest).
        40001 | 40014 | 42001 | 41001 => Verdict::RefreshToken,
        // 45009 is the daily quota: wait as long as the queue allows.
        45009 => Verdict::Transient { min_backoff_s: MAX_BACKOFF_S },
        45011 => Verdict::Transient { min_backoff_s: 5 },
        // 45015/45047 outside the 48 h window or over its quota, 48001 no permission, bad
        // parameters, unknown codes: not fixed by waiting.
        _ => Verdict::Permanent,
    }
}

/// The Official Account API client (shares the process's connection pool).
#[derive(Debug, Clone)]
pub struct OaApi {
    http: Http,
    base: String,
}

impl OaApi {
    pub fn new(http: &Http, base_url: &str) -> Self {
        Self { http: http.clone(), base: base(base_url) }
    }

    /// `POST cgi-bin/stable_token` in normal mode: never `cgi-bin/token`, whose every call
    /// invalidates the tokens other holders cached.
    pub async fn stable_token(&self, app_id: &str, secret: &SecretString) -> Result<IssuedToken, ApiError> {
        let url = format!("{}/cgi-bin/stable_token", self.base);
        let body = json!({"grant_type": "client_credential", "appid": app_id, "secret": secret.expose_secret(), "force_refresh": false});
        IssuedToken::from_body(&Http::errcode_json(self.http.client().post(url).json(&body)).await?)
    }

    /// `POST cgi-bin/<path>?access_token=…` (message/custom/send, …/typing).
    pub async fn post(&self, path: &str, token: &SecretString, body: &Value) -> Result<Value, ApiError> {
        let url = format!("{}/cgi-bin/{path}", self.base);
        let request = self.http.client().post(url).query(&[("access_token", token.expose_secret())]).json(body);
        Http::errcode_json(request).await
    }

    /// `GET cgi-bin/media/get?access_token=…&media_id=…`: the file, or for a video
    /// `{"video_url": …}`.
    pub async fn media_get(
        &self,
        token: &SecretString,
        media_id: &str,
    ) -> Result<crate::core::http::Download, ApiError> {
        let url = format!("{}/cgi-bin/media/get", self.base);
        let request = self
            .http
            .client()
            .get(url)
            .query(&[("access_token", token.expose_secret()), ("media_id", media_id)])
            .timeout(crate::core::media::DOWNLOAD_TIMEOUT);
        crate::core::http::download(request).await
    }

    /// `POST cgi-bin/media/upload?type=image|voice|video`: a temporary media id, valid 3 days.
    pub async fn media_upload(
        &self,
        token: &SecretString,
        media_type: &str,
        file_name: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let url = format!("{}/cgi-bin/media/upload", self.base);
        let form = crate::core::http::media_form(file_name, bytes);
        let query = [("access_token", token.expose_secret()), ("type", media_type)];
        let request = self.http.client().post(url).query(&query).multipart(form);
        let answer = Http::errcode_json(request.timeout(crate::core::media::DOWNLOAD_TIMEOUT)).await?;
        crate::core::http::field(&answer, "media_id")
    }

    /// A plain GET of a download link the API gave (a video's `video_url`).
    pub async fn fetch_link(&self, url: &str) -> Result<crate::core::http::Download, ApiError> {
        crate::core::http::download(self.http.client().get(url).timeout(crate::core::media::DOWNLOAD_TIMEOUT)).await
    }

    /// `message/custom/typing`: "typing…" on (`true`) or off.
    pub async fn typing(&self, token: &SecretString, open_id: &str, typing: bool) -> Result<(), ApiError> {
        let command = if typing { "Typing" } else { "CancelTyping" };
        self.post("message/custom/typing", token, &json!({"touser": open_id, "command": command})).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errcode_table_decides_refresh_retry_or_give_up() {
        let cases = [
            (40001, Verdict::RefreshToken),
            (42001, Verdict::RefreshToken),
            (-1, Verdict::Transient { min_backoff_s: 0 }),
            (45009, Verdict::Transient { min_backoff_s: MAX_BACKOFF_S }),
            (45011, Verdict::Transient { min_backoff_s: 5 }),
            (45015, Verdict::Permanent),
            (45047, Verdict::Permanent),
            (48001, Verdict::Permanent),
        ];
        for (code, verdict) in cases {
            assert_eq!(errcodes(code), verdict, "{code}");
        }
    }
}
