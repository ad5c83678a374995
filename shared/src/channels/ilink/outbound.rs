//! iLink bot messages to personal WeChat users (`sendmessage`): text, and images, files and
//! videos uploaded to WeChat's CDN first (voice goes as a file: iLink shows no outbound voice).
//! Each message echoes the user's latest `context_token` and is spaced per bot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::channels::ilink::api::{errcodes, IlinkApi};
use crate::channels::ilink::config::IlinkAccount;
use crate::channels::ilink::media::cdn_root;
use crate::channels::ilink::poller::token_fingerprint;
use crate::channels::ilink::upload::{self, Sealed, UploadedMedia};
use crate::core::envelope::{Content, MediaType, Outbound};
use crate::core::http::Http;
use crate::core::outbound::{account_of, has_account, short_hash, Delivered, Delivery, OutFile, Unit};
use crate::core::ports::ContextTokens;
use crate::core::retry::Failure;

/// The least time between two sends of one bot: a third send within about a second is refused
/// with `-2`, and each refused attempt prolongs the penalty.
pub const SEND_SPACING: Duration = Duration::from_millis(1500);

const MB: u64 = 1024 * 1024;

/// The `msg` of `POST ilink/bot/sendmessage`: one item, sent by the bot.
pub fn msg(to: &str, context_token: &str, client_id: &str, item: Value) -> Value {
    json!({
        "from_user_id": "",
        "to_user_id": to,
        "client_id": client_id,
        "message_type": 2,
        "message_state": 2,
        "item_list": [item],
        "context_token": context_token,
    })
}

/// One text item.
pub fn text_item(text: &str) -> Value {
    json!({"type": 1, "text_item": {"text": text}})
}

/// The item a part sends: its text, or the file its media id (an [`UploadedMedia`]) names.
pub fn item(part: &Content) -> Result<Value, Failure> {
    let (media_type, id) = match part {
        Content::Text { text } => return Ok(text_item(text)),
        Content::Image { media_id: Some(id), .. } => (MediaType::Image, id),
        Content::File { media_id: Some(id), .. } => (MediaType::File, id),
        Content::Voice { media_id: Some(id), .. } => (MediaType::Voice, id),
        Content::Video { media_id: Some(id), .. } => (MediaType::Video, id),
        _ => return Err(Failure::permanent("iLink sends text and uploaded files only")),
    };
    Ok(UploadedMedia::from_id(id)?.item(media_type))
}

/// Why iLink cannot send `content`, if it cannot: text, markdown (as text), and images, files,
/// voice and video by `media`. A `media_id` means nothing to iLink: files go up per recipient.
pub fn refuse(content: &Content) -> Option<&'static str> {
    match content {
        Content::Text { .. }
        | Content::Markdown { .. }
        | Content::Image { media_id: None, base64: None, media: Some(_) }
        | Content::File { media_id: None, media: Some(_) }
        | Content::Voice { media_id: None, media: Some(_) }
        | Content::Video { media_id: None, media: Some(_), .. } => None,
        Content::Image { .. } | Content::File { .. } | Content::Voice { .. } | Content::Video { .. } => {
            Some("iLink sends files only as media (key, url or base64)")
        }
        Content::News { .. } | Content::Textcard { .. } | Content::TemplateCard { .. } => {
            Some("not available on this channel")
        }
    }
}

/// When each bot of this process may send next.
#[derive(Debug, Default)]
pub struct SendSpacing {
    /// Keyed by the bot token's fingerprint.
    next: Mutex<HashMap<String, Instant>>,
}

impl SendSpacing {
    /// Reserves the bot's next send slot; returns how long to wait for it.
    pub fn reserve(&self, bot_token: &SecretString) -> Duration {
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let key = token_fingerprint(bot_token);
        let slot = next.get(&key).copied().unwrap_or(now).max(now);
        next.insert(key, slot + SEND_SPACING);
        slot - now
    }
}

/// Sends through the configured iLink bots (`ilink`; `to` is the user id).
pub struct IlinkDelivery {
    accounts: Vec<IlinkAccount>,
    api: IlinkApi,
    contexts: Arc<dyn ContextTokens>,
    spacing: SendSpacing,
    /// For the CDN, which takes no auth headers.
    http: Http,
    /// The CDN's file root (`<base>/c2c/`).
    cdn: reqwest::Url,
}

impl IlinkDelivery {
    /// Sends through `accounts`, uploading files to the CDN at `cdn_base`.
    pub fn new(
        accounts: &[IlinkAccount],
        api: &IlinkApi,
        contexts: Arc<dyn ContextTokens>,
        http: &Http,
        cdn_base: &str,
    ) -> Self {
        Self {
            accounts: accounts.to_vec(),
            api: api.clone(),
            contexts,
            spacing: SendSpacing::default(),
            http: http.clone(),
            cdn: cdn_root(cdn_base),
        }
    }
}

#[async_trait]
impl Delivery for IlinkDelivery {
    fn has_account(&self, account: &str) -> bool {
        has_account(&self.accounts, account)
    }

    fn refuse(&self, content: &Content) -> Option<&'static str> {
        refuse(content)
    }

    /// iLink chunks at ~2000 characters.
    fn text_limit(&self, _markdown: bool) -> (usize, Unit) {
        (2000, Unit::Chars)
    }

    /// iLink renders a Markdown subset in plain text messages.
    fn markdown_as_text(&self) -> bool {
        true
    }

    /// iLink's own cap on uploads is unknown (media.md §4.5; a reported 1 MB limit was the
    /// client's): 20 MB for every type, which the sender holds in memory with its ciphertext.
    fn media_cap(&self, _media_type: MediaType) -> Option<u64> {
        Some(20 * MB)
    }

    /// An unreadable cached id (another version's) is uploaded anew, like an expired one.
    fn refuses_media_id(&self, failure: &Failure) -> bool {
        failure.message == crate::channels::ilink::upload::UNREADABLE_ID
    }

    /// A file item, and voice (sent as one), shows its name.
    fn shows_file_name(&self, media_type: MediaType) -> bool {
        matches!(media_type, MediaType::File | MediaType::Voice)
    }

    /// An upload is bound to its recipient (`to_user_id`): never shared with another user.
    fn media_scope(&self, out: &Outbound) -> String {
        format!("{}:{}", out.account, short_hash(&out.to))
    }

    /// How long a CDN upload stays sendable is undocumented: an hour, then a new upload.
    fn media_id_ttl(&self) -> Duration {
        Duration::from_secs(3600)
    }

    /// `getuploadurl` for the recipient with a fresh key, then the ciphertext to the CDN. The
    /// id is an [`UploadedMedia`] (the key included: it stays in the id cache).
    async fn upload(&self, out: &Outbound, file: &OutFile) -> Result<String, Failure> {
        use crate::protocol::crypto::random_prefix;
        let account = account_of(&self.accounts, out)?;
        let sealed = Sealed::new(&file.bytes, random_prefix(), random_prefix());
        let urls = self
            .api
            .getuploadurl(&account.base_url, &account.bot_token, sealed.request(file.media_type, &out.to))
            .await
            .map_err(|e| upload::reservation_failure(&e))?;
        let url = upload::upload_url(&self.cdn, &urls, &sealed.filekey)?;
        let encrypt_query_param = upload::post_to_cdn(&self.http, &url, &sealed.ciphertext).await?;
        let uploaded = UploadedMedia {
            encrypt_query_param,
            filesize: sealed.filesize(),
            rawsize: sealed.rawsize,
            aes_key: sealed.aes_key,
            file_name: file.file_name.clone(),
        };
        Ok(uploaded.to_id())
    }

    async fn deliver(&self, out: &Outbound, part: &Content, key: &str, _retry: bool) -> Result<Delivered, Failure> {
        let account = account_of(&self.accounts, out)?;
        let item = item(part)?;
        let context =
            self.contexts.latest(&account.account, &out.to).await.map_err(|e| Failure::transient(e.to_string()))?;
        let context = context.ok_or_else(|| {
            Failure::permanent("no context_token for this user: the user must write to the bot first")
        })?;
        // The same part keeps its client_id across retries.
        let client_id = format!("wxbridge:{}", short_hash(key));
        let body = json!({"msg": msg(&out.to, &context, &client_id, item)});
        let wait = self.spacing.reserve(&account.bot_token);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.api
            .post(&account.base_url, &account.bot_token, "sendmessage", body)
            .await
            .map(|_| Delivered::Sent { undelivered: Vec::new() })
            .map_err(|e| Failure::from_api(errcodes, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_of_one_bot_are_spaced_and_other_bots_are_not_held_up() {
        let spacing = SendSpacing::default();
        let (a, b) = (SecretString::from("bot-a".to_owned()), SecretString::from("bot-b".to_owned()));
        assert_eq!(spacing.reserve(&a), Duration::ZERO);
        let second = spacing.reserve(&a);
        assert!(second > SEND_SPACING - Duration::from_millis(50) && second <= SEND_SPACING, "{second:?}");
        assert!(spacing.reserve(&a) > SEND_SPACING, "a third send waits for two spacings");
        assert_eq!(spacing.reserve(&b), Duration::ZERO);
    }

    #[test]
    fn a_message_is_one_item_sent_by_the_bot() {
        let msg = msg("u@im.wechat", "ctx", "cid", text_item("hi"));
        assert_eq!(msg["item_list"].as_array().unwrap().len(), 1);
        assert_eq!((msg["from_user_id"].as_str(), msg["message_type"].as_i64()), (Some(""), Some(2)));
        assert_eq!(msg["item_list"][0], json!({"type": 1, "text_item": {"text": "hi"}}));
    }

    #[test]
    fn files_go_only_as_media_and_cards_not_at_all() {
        use crate::core::envelope::OutMedia;
        let media = Some(OutMedia { key: Some(format!("media/{}", "a".repeat(64))), ..OutMedia::default() });
        for ok in [
            Content::Image { media_id: None, base64: None, media: media.clone() },
            Content::File { media_id: None, media: media.clone() },
            Content::Voice { media_id: None, media: media.clone() },
            Content::Video { media_id: None, media: media.clone(), title: Some("t".into()), description: None },
            Content::Markdown { text: "**hi**".into() },
        ] {
            assert_eq!(refuse(&ok), None, "{ok:?}");
        }
        let by_id = "iLink sends files only as media (key, url or base64)";
        assert_eq!(refuse(&Content::File { media_id: Some("m".into()), media: None }), Some(by_id));
        assert_eq!(refuse(&Content::Image { media_id: None, base64: Some("QQ==".into()), media: None }), Some(by_id));
        assert_eq!(
            refuse(&Content::Image { media_id: Some("m".into()), base64: None, media: media.clone() }),
            Some(by_id)
        );
        assert_eq!(refuse(&Content::News { articles: vec![] }), Some("not available on this channel"));
    }

    #[test]
    fn a_media_part_becomes_its_item_and_a_malformed_id_a_permanent_failure() {
        let id = UploadedMedia {
            encrypt_query_param: "p".into(),
            aes_key: "00112233445566778899aabbccddeeff".into(),
            filesize: 32,
            rawsize: 20,
            file_name: "voice.amr".into(),
        }
        .to_id();
        let voice = item(&Content::Voice { media_id: Some(id.clone()), media: None }).unwrap();
        assert_eq!((voice["type"].as_i64(), voice["file_item"]["file_name"].as_str()), (Some(4), Some("voice.amr")));
        let image = item(&Content::Image { media_id: Some(id), base64: None, media: None }).unwrap();
        assert_eq!(image["type"], 2);
        let failure = item(&Content::File { media_id: Some("not-json".into()), media: None }).unwrap_err();
        assert_eq!(failure.verdict, crate::core::retry::Verdict::Permanent);
        assert!(!failure.message.contains("not-json"), "{}", failure.message);
    }
}
