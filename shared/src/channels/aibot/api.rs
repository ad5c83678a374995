//! The AI bot's one outbound call: POSTing an answer to a message's single-use `response_url`
//! (plain JSON, no access token; valid one hour).

use serde_json::Value;

use crate::core::http::{base, ApiError, Http};

/// `response_url` POSTs, only to WeCom's host.
#[derive(Debug, Clone)]
pub struct AibotApi {
    http: Http,
    /// Where every `response_url` must point: `<WeCom base>/cgi-bin/aibot/response?`.
    prefix: String,
}

impl AibotApi {
    /// The client for `response_url`s on the WeCom API host `wecom_base`.
    pub fn new(http: &Http, wecom_base: &str) -> Self {
        Self { http: http.clone(), prefix: format!("{}/cgi-bin/aibot/response?", base(wecom_base)) }
    }

    /// Whether `url` is a `response_url` on WeCom's host: no other URL is ever POSTed to.
    pub fn trusts(&self, url: &str) -> bool {
        url.starts_with(&self.prefix) && !url.contains(['#', ' ', '\n', '\r'])
    }

    /// POSTs `body` to `url` once. The answer's errcode (undocumented; peers check only the HTTP
    /// status) is checked too: anything but 0 is a failure.
    pub async fn respond(&self, url: &str, body: &Value) -> Result<Value, ApiError> {
        Http::errcode_json(self.http.client().post(url).json(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::http::HttpSettings;

    #[test]
    fn only_wecom_response_urls_are_trusted() {
        let api = AibotApi::new(&Http::new(&HttpSettings::default()).unwrap(), "https://qyapi.weixin.qq.com/");
        assert!(api.trusts("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RC"));
        for url in [
            "https://evil.example/cgi-bin/aibot/response?response_code=RC",
            "https://qyapi.weixin.qq.com.evil.example/cgi-bin/aibot/response?x",
            "https://qyapi.weixin.qq.com/cgi-bin/message/send?access_token=x",
            "http://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=RC",
        ] {
            assert!(!api.trusts(url), "{url}");
        }
    }
}
