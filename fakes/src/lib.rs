//! Fake WeChat API servers for tests and the local sandbox.
//!
//! [`FakeWechat`] is one HTTP server on 127.0.0.1 that plays WeCom (`gettoken`, `message/send`,
//! `appchat/*`), the WeCom group robot webhook, the WeCom AI bot's `response_url`, the Official
//! Account (`stable_token`, `message/custom/*`) and iLink (`getupdates`, `sendmessage`,
//! `getuploadurl`, typing, QR login) at once, plus the hosts inbound media is downloaded from
//! (`media/get`, the AI bot's COS URLs, the iLink CDN) and the media uploads (`media/upload`,
//! `webhook/upload_media`, whose bytes [`FakeWechat::media`] gives back, and the iLink CDN's
//! `/c2c/upload`, whose files [`FakeWechat::ilink_uploads`] gives back decrypted); their paths do
//! not collide.
//! It checks each request the way the real server does (credentials, token lifetimes, field types
//! and limits) and answers with real-shaped bodies, so a client that passes here has been held to
//! the platforms' rules rather than to a mock's assumptions.
//!
//! Tests set up accounts and recipients, optionally inject faults per path, run the client against
//! [`FakeWechat::base_url`], then assert on [`FakeWechat::deliveries`] and
//! [`FakeWechat::problems`] (every refused request explains itself there).
//!
//! The AI bot calls the bridge rather than being called: [`aibot::AibotWecom`] plays WeCom's side
//! of it, posting encrypted callbacks to the bridge and checking every answer.
//!
//! ```no_run
//! # async fn demo() {
//! let wx = fakes::FakeWechat::start().await;
//! wx.add_wecom_app("ww1", "secret", 1000002);
//! wx.add_wecom_user("alice");
//! // … point the client at wx.base_url and send …
//! assert!(wx.problems().is_empty(), "{:#?}", wx.problems());
//! # }
//! ```

pub mod aibot;
mod aibot_crypto;
mod aibot_response;
mod ilink;
mod ilink_login;
mod ilink_upload;
mod kf;
mod kf_store;
mod media;
mod media_store;
mod oa;
mod robot;
mod server;
mod state;
mod types;
mod upload;
mod wecom;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use aibot::{AibotWecom, Answer, Conversation};
use server::{lock, Shared};
use state::{OaApp, State, WecomApp};
pub use types::{Api, CdnUploadFault, Delivery, Exchange, Fault, IlinkMediaSend, IlinkUpload, IlinkUploadAnswer};

/// A running fake. Dropping it stops the server.
pub struct FakeWechat {
    /// `http://127.0.0.1:PORT`, no trailing slash; use it as the base URL of every platform.
    pub base_url: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWechat {
    /// Binds 127.0.0.1 on a free port and serves in a background task of the current runtime.
    ///
    /// # Panics
    /// If no local port can be bound: the test cannot run at all then.
    pub async fn start() -> FakeWechat {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0 for the fake WeChat server");
        let addr = listener.local_addr().expect("local address of the fake WeChat listener");
        let base_url = format!("http://{addr}");
        let state: Shared = Arc::new(Mutex::new(State { base_url: base_url.clone(), ..State::default() }));
        let app = axum::Router::new().fallback(server::dispatch).with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            // Serving only ends with an accept error on a loopback listener; nothing to report to.
            let _ = axum::serve(listener, app).await;
        });
        FakeWechat { base_url, state, server }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A WeCom self-built app. Several apps may share a corp; gettoken picks by secret.
    pub fn add_wecom_app(&self, corp_id: &str, secret: &str, agent_id: u32) {
        let mut st = self.state();
        st.wecom_apps.retain(|a| !(a.corp_id == corp_id && a.agent_id == agent_id));
        st.wecom_apps.push(WecomApp {
            corp_id: corp_id.to_owned(),
            secret: secret.to_owned(),
            agent_id,
            current: None,
        });
    }

    /// A member of the (single) WeCom directory.
    pub fn add_wecom_user(&self, user_id: &str) {
        self.state().wecom_users.insert(user_id.to_owned());
    }

    /// An existing app group chat; its owner is the first member. Members need not be added as
    /// users (appchat/create checks them, a pre-existing chat does not).
    pub fn add_appchat(&self, chat_id: &str, members: &[&str]) {
        let members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
        let chat =
            state::AppChat { name: chat_id.to_owned(), owner: members.first().cloned().unwrap_or_default(), members };
        self.state().appchats.insert(chat_id.to_owned(), chat);
    }

    /// Makes every WeCom user id and Official Account OpenID a known user, as a sandbox needs:
    /// whoever writes to the bridge can be answered.
    pub fn open_directory(&self) {
        self.state().open_directory = true;
    }

    /// A group robot webhook key.
    pub fn add_robot(&self, key: &str) {
        self.state().robots.entry(key.to_owned()).or_default();
    }

    /// An Official Account (AppID + AppSecret).
    pub fn add_oa(&self, app_id: &str, secret: &str) {
        self.state().oa_apps.insert(app_id.to_owned(), OaApp { secret: secret.to_owned(), current: None });
    }

    /// A follower OpenID of the Official Account(s).
    pub fn add_oa_user(&self, open_id: &str) {
        self.state().oa_users.insert(open_id.to_owned());
    }

    /// An iLink bot token the fake accepts.
    pub fn add_ilink_bot(&self, bot_token: &str) {
        self.state().ilink_bots.insert(bot_token.to_owned());
    }

    /// A user who has written to the bot; `context_token` is the latest one issued to them
    /// (calling again with a new one makes the old one stale, as a new inbound message does).
    pub fn add_ilink_user(&self, bot_token: &str, user_id: &str, context_token: &str) {
        self.state().ilink_users.insert((bot_token.to_owned(), user_id.to_owned()), context_token.to_owned());
    }

    /// Queues an inbound message for the bot's `getupdates` (its JSON as the server sends it). A
    /// user message (`message_type` 1) makes its `context_token` the user's latest.
    pub fn push_ilink_message(&self, bot_token: &str, message: serde_json::Value) {
        ilink::push(&mut self.state(), bot_token, message);
    }

    /// Delivers every message pushed from now on a second time, `after` later, with the same
    /// `message_id` (the real service's habit); `None` turns it off.
    pub fn set_ilink_redeliver(&self, after: Option<Duration>) {
        self.state().ilink_redeliver = after;
    }

    /// The statuses the next QR status polls answer, in order (`wait`, `scaned`, `expired`,
    /// `confirmed`, …); `wait` once they run out.
    pub fn script_ilink_login(&self, statuses: &[&str]) {
        self.state().qr.script = statuses.iter().map(|s| (*s).to_owned()).collect();
    }

    /// The bot account id and scanning user a confirmed login names.
    pub fn set_ilink_login(&self, account: &str, user: &str) {
        self.state().qr.login = Some((account.to_owned(), user.to_owned()));
    }

    /// Whether a bot token is currently accepted (issued and not revoked by a newer login).
    pub fn ilink_token_valid(&self, bot_token: &str) -> bool {
        self.state().ilink_bots.contains(bot_token)
    }

    /// How long `getupdates` holds an empty poll (default 300 ms).
    pub fn set_ilink_hold(&self, hold: Duration) {
        self.state().ilink_hold = hold;
    }

    /// A new single-use AI bot `response_url` on this fake
    /// (`{base_url}/cgi-bin/aibot/response?response_code=…`), valid for the response TTL.
    ///
    /// The first accepted POST to it is a [`Delivery`] of [`Api::AibotResponse`] whose `account` is
    /// the response code. Refused (made-up codes, WeCom documents none): an unknown code 846601,
    /// an expired one 846602, a used one 846603 (also counted by
    /// [`FakeWechat::aibot_response_refusals`]); a Content-Type other than JSON or a body that is not
    /// JSON 47001, an empty body 44002, a msgtype other than `markdown`/`template_card` 40008, empty
    /// content 44004, content over 20 480 bytes 45002, a bad card or feedback 40058.
    pub fn aibot_response_url(&self) -> String {
        let code = aibot_response::issue(&mut self.state());
        format!("{}/cgi-bin/aibot/response?response_code={code}", self.base_url)
    }

    /// Lifetime of the `response_url`s issued from now on (default 3600 s).
    pub fn set_aibot_response_ttl(&self, ttl: Duration) {
        self.state().aibot_response_ttl = ttl;
    }

    /// POSTs refused because their `response_url` had already been used once.
    pub fn aibot_response_refusals(&self) -> usize {
        self.state().aibot_response_refusals
    }

    /// A temporary media of a WeCom corp, for `GET /cgi-bin/media/get`; returns its new media_id.
    /// Like an upload it lives 3 days, and the corp's `message/send` / `appchat/send` may send it:
    /// its type is what `mime` says (`image/…` image, `audio/…` voice, `video/…` video, else file).
    ///
    /// Every app of the corp may fetch it (a token of another corp gets 40007, labelled
    /// `text/plain`). The answer is `Content-Type: mime` with `Content-disposition: attachment;
    /// filename="…"` (the name as raw UTF-8). One `Range: bytes=…` answers 206 with
    /// `Content-Range`, a bad or unsatisfiable one 416; a file over
    /// [`FakeWechat::set_wecom_media_get_limit`] fetched without `Range` is 830002.
    ///
    /// # Panics
    /// If `filename` or `mime` holds control characters (they cannot go in a header).
    pub fn add_wecom_media(&self, corp_id: &str, bytes: Vec<u8>, filename: &str, mime: &str) -> String {
        let media = media_store::Media::new(media_store::Platform::Wecom, corp_id, bytes, filename, mime);
        media::add(&mut self.state(), media)
    }

    /// A temporary media of an Official Account, for `GET /cgi-bin/media/get`; returns its new
    /// media_id. Served as WeCom's (without `Range` support, errors in the OA's style), except that
    /// a `video/…` mime answers `{"video_url":"{base_url}/oa/video?id=…"}`, and that URL (no token)
    /// serves the bytes.
    ///
    /// # Panics
    /// If `filename` or `mime` holds control characters (they cannot go in a header).
    pub fn add_oa_media(&self, app_id: &str, bytes: Vec<u8>, filename: &str, mime: &str) -> String {
        let media = media_store::Media::new(media_store::Platform::Oa, app_id, bytes, filename, mime);
        media::add(&mut self.state(), media)
    }

    /// What was uploaded (`media/upload`, `webhook/upload_media`) or added (`add_wecom_media`,
    /// `add_oa_media`) under `media_id`: the file name (the raw `filename` of the multipart part,
    /// as UTF-8) and the bytes. Expired media are still here. An iLink CDN upload is found by its
    /// `x-encrypted-param`, decrypted, named as the last file item that sent it named it.
    ///
    /// Uploads are checked as media.md §1.3 and §2 describe (part `media` with a raw
    /// `filename="…"`; `filename*=` alone is 44001; more than 5 bytes, else 40006; at most 10 MB
    /// image/video, 2 MB voice, 20 MB file, else 45001; JPG/PNG, AMR, MP4 by magic bytes, else
    /// 40004; another `type` 40005). A WeCom upload belongs to the token's corp, a robot's to its
    /// key. Sends check the id: `message/send` / `appchat/send` image, voice, video and file, and
    /// the robot's file and voice, answer 40007 for an id that is unknown, another corp's or robot's,
    /// expired, or of another type (a `file` message takes any type).
    pub fn media(&self, media_id: &str) -> Option<(String, Vec<u8>)> {
        media::lookup(&self.state(), media_id)
    }

    /// `media_id` answers 40007 from now on (sends and `media/get`), as one older than 3 days does.
    pub fn expire_media(&self, media_id: &str) {
        media::expire(&mut self.state(), Some(media_id));
    }

    /// Every media_id issued so far answers 40007 from now on.
    pub fn expire_all_media(&self) {
        media::expire(&mut self.state(), None);
    }

    /// Largest file WeCom's media/get sends without `Range` (default 20 MiB); above it, 830002.
    pub fn set_wecom_media_get_limit(&self, bytes: usize) {
        self.state().media.wecom_get_limit = bytes;
    }

    /// An AI bot media URL (`{base_url}/aibot/media?id=…`) serving `plaintext` as WeCom does
    /// (wecom-aibot.md §7): AES-256-CBC with the key decoded from `encoding_aes_key`, IV its first
    /// 16 bytes, PKCS#7 padding to a multiple of 32; `Content-Type: application/octet-stream`, and
    /// with a `filename`, `Content-Disposition: attachment; filename*=UTF-8''…`.
    ///
    /// The URL lives [`FakeWechat::set_aibot_media_ttl`]; after that it answers COS's 403
    /// `AccessDenied` XML, counted by [`FakeWechat::aibot_media_expired_hits`] (not a problem).
    ///
    /// # Panics
    /// If `encoding_aes_key` is not 43 base64 characters decoding to 32 bytes.
    pub fn aibot_media_url(&self, plaintext: &[u8], encoding_aes_key: &str, filename: Option<&str>) -> String {
        let media = media_store::AibotMedia::new(plaintext, encoding_aes_key, filename);
        media::add_aibot(&mut self.state(), media)
    }

    /// Lifetime of the AI bot media URLs issued from now on (default 300 s).
    pub fn set_aibot_media_ttl(&self, ttl: Duration) {
        self.state().media.aibot_ttl = ttl;
    }

    /// GETs of AI bot media URLs after they expired.
    pub fn aibot_media_expired_hits(&self) -> usize {
        self.state().media.aibot_expired_hits
    }

    /// Puts `plaintext` on the iLink CDN encrypted as the real one is (AES-128-ECB, PKCS#7) and
    /// returns its `encrypt_query_param`. `GET /c2c/download?encrypted_query_param=…` serves the
    /// ciphertext; the parameter holds `+`, `/` and `=`, so it must be percent-encoded. An unknown
    /// parameter answers 404 with an empty body.
    pub fn ilink_cdn_media(&self, plaintext: &[u8], key: [u8; 16]) -> String {
        let ciphertext = media_store::ecb_encrypt(plaintext, &key);
        media::add_cdn(&mut self.state(), ciphertext)
    }

    /// As [`FakeWechat::ilink_cdn_media`] for an image sent without a key: served as it is.
    pub fn ilink_cdn_plain(&self, plaintext: &[u8]) -> String {
        media::add_cdn(&mut self.state(), plaintext.to_vec())
    }

    /// How `getuploadurl` answers from now on (default: `upload_full_url` on this fake).
    pub fn set_ilink_upload_answer(&self, answer: IlinkUploadAnswer) {
        self.state().media.ilink.answer = answer;
    }

    /// The next `times` CDN uploads (`POST /c2c/upload`) answer `fault` instead of taking the
    /// file; the reservation stays pending, so a retry of the same upload may succeed.
    pub fn fail_ilink_cdn_uploads(&self, times: usize, fault: CdnUploadFault) {
        self.state().media.ilink.faults.extend(std::iter::repeat_n(fault, times));
    }

    /// Every upload reserved with `getuploadurl`, in order, with its file (decrypted with the
    /// announced key) once the CDN took it. Checks: see `ilink_upload`'s module notes.
    pub fn ilink_uploads(&self) -> Vec<IlinkUpload> {
        self.state().media.ilink.uploads.clone()
    }

    /// Every accepted `sendmessage` of an uploaded file (image, file, video, voice), in order:
    /// the item type, the file name a file item shows, and the file's bytes.
    pub fn ilink_media_sends(&self) -> Vec<IlinkMediaSend> {
        self.state().media.ilink.sends.clone()
    }

    /// Queues a fault for `path` (e.g. `"/cgi-bin/message/send"`); each request to that path takes
    /// the oldest one.
    pub fn inject(&self, path: &str, fault: Fault) {
        self.state().faults.entry(path.to_owned()).or_default().push_back(fault);
    }

    /// Every access token issued so far (WeCom and OA) answers 42001 from now on; the next
    /// gettoken / stable_token issues a new one.
    pub fn expire_tokens(&self) {
        for token in self.state().tokens.values_mut() {
            token.expired = true;
        }
    }

    /// `expires_in` (and real lifetime) of tokens issued from now on; default 7200.
    pub fn set_token_ttl(&self, seconds: u64) {
        self.state().ttl_secs = seconds;
    }

    /// Requests received on `path`, whatever their outcome (faults included).
    pub fn calls(&self, path: &str) -> usize {
        self.state().calls.get(path).copied().unwrap_or(0)
    }

    /// Accepted sends, in arrival order.
    /// A 微信客服 account of `corp_id` (its corp's app tokens may pull and send for it).
    pub fn add_kf_account(&self, corp_id: &str, open_kfid: &str) {
        let account = kf_store::KfAccount { corp_id: corp_id.to_owned(), ..kf_store::KfAccount::default() };
        self.state().kf.accounts.insert(open_kfid.to_owned(), account);
    }

    /// A customer's text to the kf account, sent now; returns its msgid. It opens the
    /// customer's 48 h window for five messages.
    ///
    /// # Panics
    /// If the account was not added.
    pub fn kf_customer_says(&self, open_kfid: &str, external_userid: &str, text: &str) -> String {
        let msgid = wire::random_alnum(44);
        let item = serde_json::json!({"msgid": msgid, "open_kfid": open_kfid, "external_userid": external_userid,
            "send_time": wire::unix_secs(), "origin": 3, "msgtype": "text", "text": {"content": text}});
        kf::push(&mut self.state(), open_kfid, item);
        msgid
    }

    /// Any item (a servicer's message, an event, an old message, a repeat), as given.
    ///
    /// # Panics
    /// If the account was not added.
    pub fn kf_push_item(&self, open_kfid: &str, item: serde_json::Value) {
        kf::push(&mut self.state(), open_kfid, item);
    }

    /// A servicer takes the customer's session in the WeCom client: state 3 and the
    /// `session_status_change` event (change_type 2, transferred to `servicer`) WeChat records.
    pub fn kf_servicer_takes_over(&self, open_kfid: &str, external_userid: &str, servicer: &str) {
        let item = serde_json::json!({"msgid": wire::random_alnum(44), "send_time": wire::unix_secs(), "origin": 4,
            "msgtype": "event", "event": {"event_type": "session_status_change", "open_kfid": open_kfid,
            "external_userid": external_userid, "change_type": 2, "new_servicer_userid": servicer}});
        let mut st = self.state();
        kf::push(&mut st, open_kfid, item);
        if let Some(account) = st.kf.accounts.get_mut(open_kfid) {
            account.states.insert(external_userid.to_owned(), 3);
        }
    }

    /// A servicer's message from the WeCom client (origin 5); returns its msgid.
    pub fn kf_servicer_says(&self, open_kfid: &str, external_userid: &str, servicer: &str, text: &str) -> String {
        let msgid = wire::random_alnum(44);
        let item = serde_json::json!({"msgid": msgid, "open_kfid": open_kfid, "external_userid": external_userid,
            "send_time": wire::unix_secs(), "origin": 5, "servicer_userid": servicer, "msgtype": "text",
            "text": {"content": text}});
        kf::push(&mut self.state(), open_kfid, item);
        msgid
    }

    /// WeChat could not deliver the accepted `send_msg` `msgid` after all: the `msg_send_fail`
    /// event it records (`fail_type` as wecom-kf.md §6: 10 the user rejected, 4 expired, …).
    pub fn kf_send_fails(&self, open_kfid: &str, external_userid: &str, msgid: &str, fail_type: i64) {
        let item = serde_json::json!({"msgid": wire::random_alnum(44), "send_time": wire::unix_secs(), "origin": 4,
            "msgtype": "event", "event": {"event_type": "msg_send_fail", "open_kfid": open_kfid,
            "external_userid": external_userid, "fail_msgid": msgid, "fail_type": fail_type}});
        kf::push(&mut self.state(), open_kfid, item);
    }

    /// A customer opening the chat now: an `enter_session` event with a fresh welcome code
    /// (valid 20 s, once); returns the code.
    ///
    /// # Panics
    /// If the account was not added.
    pub fn kf_enter_session(&self, open_kfid: &str, external_userid: &str) -> String {
        let code = wire::random_alnum(32);
        let item = serde_json::json!({"msgid": wire::random_alnum(44), "send_time": wire::unix_secs(), "origin": 4,
            "msgtype": "event", "event": {"event_type": "enter_session", "open_kfid": open_kfid,
            "external_userid": external_userid, "scene": "demo", "welcome_code": code}});
        kf::push(&mut self.state(), open_kfid, item);
        code
    }

    /// The `Token` of a `kf_msg_or_event` callback for the account, valid 10 minutes.
    ///
    /// # Panics
    /// If the account was not added.
    pub fn kf_callback_token(&self, open_kfid: &str) -> String {
        kf::callback_token(&mut self.state(), open_kfid)
    }

    /// Items per `sync_msg` page from now on (default 1000).
    pub fn set_kf_page_size(&self, size: usize) {
        self.state().kf.page_size = size.max(1);
    }

    /// The next `n` pulls of the account answer an empty page with `has_more` 1.
    pub fn kf_empty_pages(&self, open_kfid: &str, n: usize) {
        if let Some(account) = self.state().kf.accounts.get_mut(open_kfid) {
            account.empty_pages = n;
        }
    }

    /// The session state of a customer (0 new, 1 the API's assistant, 2 queued, 3 a human
    /// servicer, 4 ended), as a servicer taking it over would set it.
    pub fn set_kf_service_state(&self, open_kfid: &str, external_userid: &str, state: i64) {
        if let Some(account) = self.state().kf.accounts.get_mut(open_kfid) {
            account.states.insert(external_userid.to_owned(), state);
        }
    }

    /// The session state of a customer.
    pub fn kf_service_state(&self, open_kfid: &str, external_userid: &str) -> i64 {
        self.state().kf.accounts.get(open_kfid).and_then(|a| a.states.get(external_userid).copied()).unwrap_or(0)
    }

    /// `sync_msg` calls made without a callback token.
    pub fn kf_tokenless_pulls(&self) -> usize {
        self.state().kf.tokenless_pulls
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// Accepted sends of one API, in arrival order.
    pub fn deliveries_of(&self, api: Api) -> Vec<Delivery> {
        self.state().deliveries.iter().filter(|d| d.api == api).cloned().collect()
    }

    /// One line per request the fake refused (and per protocol slip it noticed but let through,
    /// such as a reused X-WECHAT-UIN). Injected faults are not problems.
    pub fn problems(&self) -> Vec<String> {
        self.state().problems.clone()
    }

    /// From now on, logs every request with its answer (a sandbox shows them; tests read
    /// deliveries instead).
    pub fn record_exchanges(&self) {
        self.state().exchanges.get_or_insert_with(Vec::new);
    }

    /// The requests and answers logged since [`FakeWechat::record_exchanges`] or the last take,
    /// in order; the log is empty after (a long-running sandbox keeps no history).
    pub fn take_exchanges(&self) -> Vec<Exchange> {
        self.state().exchanges.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl Drop for FakeWechat {
    fn drop(&mut self) {
        self.server.abort();
    }
}
