//! What `kf/sync_msg` answers (wecom-kf.md §3, §6): a page of items (customer messages,
//! servicer messages, system events), the next cursor and whether more follow. Parsed leniently
//! item by item: an item of an unknown type is still an item (recorded, its cursor passed);
//! only a page without its envelope fields is an error.

use serde_json::Value;

use crate::core::envelope::{Channel, Inbound, Kind, Link, Location, Media, MediaType};

/// The most items one `sync_msg` page may carry (and what the bridge asks for).
pub const PAGE_LIMIT: u32 = 1000;
/// The longest `msgid` or user id the bridge keeps (WeChat's are 32 to 44 characters; anything
/// far longer is not WeChat's and would bloat, or break, the table keys).
const MAX_MSGID: usize = 128;

/// Who an item comes from (`origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// 3: the WeChat user (the customer).
    Customer,
    /// 4: a system event.
    Event,
    /// 5: a servicer writing from the WeCom client.
    Servicer,
    Other(i64),
}

/// One page of `sync_msg`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPage {
    pub next_cursor: Option<String>,
    pub has_more: bool,
    pub items: Vec<KfItem>,
}

impl SyncPage {
    /// Reads an answer whose errcode was 0.
    pub fn parse(answer: &Value) -> Result<Self, String> {
        let has_more = match answer.get("has_more") {
            Some(v) if v.as_i64() == Some(1) || v.as_bool() == Some(true) => true,
            Some(v) if v.as_i64() == Some(0) || v.as_bool() == Some(false) => false,
            None => false,
            Some(_) => return Err("has_more is not 0 or 1".into()),
        };
        let next_cursor =
            answer.get("next_cursor").and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_owned);
        let items = match answer.get("msg_list") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.iter().filter_map(KfItem::parse).collect(),
            Some(_) => return Err("msg_list is not a list".into()),
        };
        if has_more && next_cursor.is_none() {
            return Err("has_more is 1 but there is no next_cursor".into());
        }
        Ok(Self { next_cursor, has_more, items })
    }
}

/// One item of `msg_list`.
#[derive(Debug, Clone, PartialEq)]
pub struct KfItem {
    pub msgid: String,
    /// The customer (for events, from `event.external_userid`).
    pub external_userid: Option<String>,
    pub open_kfid: Option<String>,
    /// Unix seconds.
    pub send_time: u64,
    pub origin: Origin,
    pub msgtype: String,
    pub servicer_userid: Option<String>,
    /// The item as WeChat sent it (the `raw` of its `Inbound`).
    pub raw: Value,
}

impl KfItem {
    /// An item with a usable `msgid`, else `None` (nothing can dedupe it).
    pub fn parse(raw: &Value) -> Option<Self> {
        let msgid = raw.get("msgid")?.as_str()?.to_owned();
        if msgid.is_empty() || msgid.len() > MAX_MSGID {
            return None;
        }
        // Ids go into table keys: one far longer than WeChat's is not WeChat's.
        let text = |v: &Value, k: &str| {
            v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= MAX_MSGID).map(str::to_owned)
        };
        let event = raw.get("event").cloned().unwrap_or(Value::Null);
        let origin = match raw.get("origin").and_then(Value::as_i64) {
            Some(3) => Origin::Customer,
            Some(4) => Origin::Event,
            Some(5) => Origin::Servicer,
            Some(other) => Origin::Other(other),
            None => Origin::Other(0),
        };
        Some(Self {
            external_userid: text(raw, "external_userid").or_else(|| text(&event, "external_userid")),
            open_kfid: text(raw, "open_kfid").or_else(|| text(&event, "open_kfid")),
            send_time: raw.get("send_time").and_then(Value::as_u64).unwrap_or(0),
            origin,
            msgtype: text(raw, "msgtype").unwrap_or_default(),
            servicer_userid: text(raw, "servicer_userid"),
            msgid,
            raw: raw.clone(),
        })
    }

    /// The event's `event_type`, for a system event.
    pub fn event_type(&self) -> Option<&str> {
        self.raw.get("event")?.get("event_type")?.as_str()
    }

    /// A string field of the event (an id: at most 128 bytes, else none).
    pub fn event_field(&self, name: &str) -> Option<&str> {
        self.raw.get("event")?.get(name)?.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_MSGID)
    }

    /// A number field of the event.
    pub fn event_number(&self, name: &str) -> Option<i64> {
        self.raw.get("event")?.get(name)?.as_i64()
    }

    /// The `Inbound` of a customer's message to kf account `account` (its id is
    /// `wecom_kf:<account>:<msgid>`, the conversation the customer); `None` without a customer.
    pub fn to_inbound(&self, account: &str, received_at: u64) -> Option<Inbound> {
        let user = self.external_userid.as_deref()?;
        let id = format!("wecom_kf:{account}:{}", self.msgid);
        let mut inbound =
            Inbound::direct(Channel::WecomKf, account, id, user, self.send_time, received_at, self.raw.clone());
        let object = self.raw.get(&self.msgtype).cloned().unwrap_or(Value::Null);
        let field = |k: &str| object.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let media =
            |media_type| Media { media_id: field("media_id"), media_type: Some(media_type), ..Media::default() };
        match self.msgtype.as_str() {
            "text" => {
                inbound.kind = Kind::Text;
                inbound.text = field("content");
            }
            "image" => (inbound.kind, inbound.media) = (Kind::Image, Some(media(MediaType::Image))),
            "voice" => (inbound.kind, inbound.media) = (Kind::Voice, Some(media(MediaType::Voice))),
            "video" => (inbound.kind, inbound.media) = (Kind::Video, Some(media(MediaType::Video))),
            "file" => (inbound.kind, inbound.media) = (Kind::File, Some(media(MediaType::File))),
            "location" => {
                let number = |k: &str| object.get(k).and_then(Value::as_f64);
                if let (Some(latitude), Some(longitude)) = (number("latitude"), number("longitude")) {
                    inbound.kind = Kind::Location;
                    let label = [field("name"), field("address")].into_iter().flatten().collect::<Vec<_>>().join(" ");
                    inbound.location = Some(Location {
                        latitude,
                        longitude,
                        scale: None,
                        precision: None,
                        label: (!label.is_empty()).then_some(label),
                    });
                }
            }
            "link" => {
                if let Some(url) = field("url") {
                    inbound.kind = Kind::Link;
                    inbound.link = Some(Link {
                        url,
                        title: field("title"),
                        description: field("desc"),
                        pic_url: field("pic_url"),
                    });
                }
            }
            _ => {}
        }
        Some(inbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_reads_its_cursor_and_items_and_an_empty_page_may_have_more() {
        let page = SyncPage::parse(&json!({"errcode": 0, "next_cursor": "c2", "has_more": 1, "msg_list": []})).unwrap();
        assert_eq!((page.next_cursor.as_deref(), page.has_more, page.items.len()), (Some("c2"), true, 0));
        let page = SyncPage::parse(&json!({"errcode": 0, "next_cursor": "c3", "has_more": 0, "msg_list": [
            {"msgid": "m1", "open_kfid": "wk1", "external_userid": "wm1", "send_time": 1700000000, "origin": 3,
             "msgtype": "text", "text": {"content": "退货怎么办理"}},
            {"msgid": "", "origin": 3},
            {"origin": 3},
            {"msgid": "e1", "send_time": 1700000001, "origin": 4, "msgtype": "event",
             "event": {"event_type": "enter_session", "open_kfid": "wk1", "external_userid": "wm2", "welcome_code": "W"}}
        ]}))
        .unwrap();
        assert_eq!(page.items.len(), 2, "items without a msgid are left out");
        assert_eq!(page.items[1].external_userid.as_deref(), Some("wm2"), "an event's user is inside it");
        assert_eq!(
            (page.items[1].event_type(), page.items[1].event_field("welcome_code")),
            (Some("enter_session"), Some("W"))
        );
        for bad in [json!({"has_more": 1, "msg_list": []}), json!({"has_more": "x"}), json!({"msg_list": {}})] {
            assert!(SyncPage::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_customer_message_becomes_an_inbound_of_the_kf_account() {
        let item = KfItem::parse(&json!({"msgid": "m1", "open_kfid": "wk1", "external_userid": "wm1",
            "send_time": 1700000000, "origin": 3, "msgtype": "image", "image": {"media_id": "MID"}}))
        .unwrap();
        let inbound = item.to_inbound("support", 1700000005).unwrap();
        assert_eq!(
            (inbound.id.as_str(), inbound.channel, inbound.kind),
            ("wecom_kf:support:m1", Channel::WecomKf, Kind::Image)
        );
        assert_eq!(inbound.conversation.id, "wm1");
        assert_eq!(inbound.media.unwrap().media_id.as_deref(), Some("MID"));
        let text = KfItem::parse(&json!({"msgid": "m2", "external_userid": "wm1", "origin": 3, "msgtype": "text",
            "text": {"content": "你好"}}))
        .unwrap();
        assert_eq!(text.to_inbound("support", 0).unwrap().text.as_deref(), Some("你好"));
        let nobody = KfItem::parse(&json!({"msgid": "m3", "origin": 3, "msgtype": "text"})).unwrap();
        assert!(nobody.to_inbound("support", 0).is_none());
    }
}
