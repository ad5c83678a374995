//! WeCom app callback messages: decrypted XML → [`Fields`] → [`WecomMessage`].

use crate::core::envelope::{self, Channel, Conversation, ConversationKind, Inbound, Kind, Media};
pub use crate::protocol::fields::MessageError;
use crate::protocol::fields::{common, format_u64, itoa_buf, lenient_f64, number, owned, required, texts, Common};
use crate::protocol::xml::{self, Fields, XmlWriter};

/// A WeCom message id: a 64-bit integer that does not fit an `f64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgId(pub u64);

/// The fields every WeCom callback carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The CorpID.
    pub to: String,
    /// The member's UserID, or `sys` for system events.
    pub from: String,
    pub create_time: u64,
    pub msg_type: String,
    pub agent_id: Option<u32>,
    pub msg_id: Option<MsgId>,
}

/// One option chosen on an interactive template card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedItem {
    pub question_key: String,
    pub option_ids: Vec<String>,
}

/// A WeCom event (`MsgType` = `event`).
#[derive(Debug, Clone, PartialEq)]
pub enum WecomEvent {
    Subscribe,
    Unsubscribe,
    EnterAgent {
        key: String,
    },
    /// Periodic location report (`LOCATION`).
    Location {
        latitude: Option<f64>,
        longitude: Option<f64>,
        precision: Option<f64>,
    },
    Click {
        key: String,
    },
    View {
        url: String,
    },
    ChangeContact {
        change_type: String,
        user_id: Option<String>,
        party_id: Option<String>,
    },
    ChangeExternalContact {
        change_type: String,
        user_id: Option<String>,
        external_user_id: Option<String>,
        welcome_code: Option<String>,
    },
    ChangeExternalChat {
        change_type: String,
        chat_id: String,
        update_detail: Option<String>,
        members: Vec<String>,
    },
    TemplateCard {
        name: String,
        event_key: String,
        task_id: String,
        card_type: Option<String>,
        response_code: Option<String>,
        selected: Vec<SelectedItem>,
    },
    BatchJobResult {
        job_id: Option<String>,
        job_type: Option<String>,
    },
    /// Any other event (menus with nested payloads, newer events): forwarded with its raw fields.
    Other {
        name: String,
    },
}

impl WecomEvent {
    /// The event name as the platform sent it.
    pub fn name<'a>(&'a self, fields: &'a Fields) -> &'a str {
        match self {
            Self::Other { name } | Self::TemplateCard { name, .. } => name,
            _ => fields.text("Event").unwrap_or_default(),
        }
    }
}

/// The typed body of a WeCom callback.
#[derive(Debug, Clone, PartialEq)]
pub enum WecomMessage {
    Text {
        content: String,
    },
    Image {
        pic_url: Option<String>,
        media_id: String,
    },
    Voice {
        media_id: String,
        format: Option<String>,
    },
    Video {
        media_id: String,
        thumb_media_id: Option<String>,
    },
    File {
        media_id: String,
        file_name: Option<String>,
    },
    Location {
        latitude: f64,
        longitude: f64,
        scale: Option<f64>,
        label: Option<String>,
    },
    Link {
        title: Option<String>,
        description: Option<String>,
        url: String,
        pic_url: Option<String>,
    },
    Event(WecomEvent),
    /// A `MsgType` this version does not know; the raw fields are kept.
    Unsupported {
        msg_type: String,
    },
}

/// A parsed WeCom callback: header, typed body and every raw field.
#[derive(Debug, Clone, PartialEq)]
pub struct WecomCallbackMessage {
    pub header: Header,
    pub body: WecomMessage,
    pub fields: Fields,
}

impl WecomCallbackMessage {
    /// Parses a decrypted callback payload.
    pub fn parse(xml_text: &str) -> Result<Self, MessageError> {
        Self::from_fields(xml::parse(xml_text)?)
    }

    /// Types already-parsed fields.
    pub fn from_fields(mut fields: Fields) -> Result<Self, MessageError> {
        // A 微信客服 callback (`kf_msg_or_event`) may come without FromUserName (the doc's
        // example has none): an event from the system.
        if fields.text("MsgType") == Some("event") {
            fields.or_insert_text("FromUserName", "sys");
        }
        let Common { to, from, create_time, msg_type } = common(&fields)?;
        let header = Header {
            to,
            from,
            create_time,
            msg_type,
            // Optional header fields are typed when they parse; `raw` keeps them as sent.
            agent_id: number(&fields, "AgentID").ok().flatten(),
            msg_id: number(&fields, "MsgId").ok().flatten().map(MsgId),
        };
        // A signed message whose body does not fit its type is still the user's message: it is
        // forwarded as unsupported with its raw fields rather than refused (and lost).
        let body = Self::body(&header, &fields).unwrap_or_else(|err| {
            tracing::warn!(msg_type = %header.msg_type, error = %err, "message body does not fit its type; forwarded as unsupported");
            WecomMessage::Unsupported { msg_type: header.msg_type.clone() }
        });
        Ok(Self { header, body, fields })
    }

    fn body(header: &Header, fields: &Fields) -> Result<WecomMessage, MessageError> {
        let media_id = || required(fields, "MediaId").map(str::to_owned);
        let body = match header.msg_type.as_str() {
            "text" => WecomMessage::Text { content: required(fields, "Content")?.to_owned() },
            "image" => WecomMessage::Image { pic_url: owned(fields, "PicUrl"), media_id: media_id()? },
            "voice" => WecomMessage::Voice { media_id: media_id()?, format: owned(fields, "Format") },
            "video" => WecomMessage::Video { media_id: media_id()?, thumb_media_id: owned(fields, "ThumbMediaId") },
            "file" => WecomMessage::File {
                media_id: media_id()?,
                file_name: owned(fields, "FileName").or_else(|| owned(fields, "Title")),
            },
            "location" => WecomMessage::Location {
                latitude: number(fields, "Location_X")?.ok_or(MessageError::Missing("Location_X"))?,
                longitude: number(fields, "Location_Y")?.ok_or(MessageError::Missing("Location_Y"))?,
                scale: lenient_f64(fields, "Scale"),
                label: owned(fields, "Label"),
            },
            "link" => WecomMessage::Link {
                title: owned(fields, "Title"),
                description: owned(fields, "Description"),
                url: required(fields, "Url")?.to_owned(),
                pic_url: owned(fields, "PicUrl"),
            },
            "event" => WecomMessage::Event(parse_event(fields)?),
            other => WecomMessage::Unsupported { msg_type: other.to_owned() },
        };
        Ok(body)
    }

    /// The key that identifies this message across WeChat's retries.
    ///
    /// Messages: the MsgId. Events: sender + CreateTime (the documented rule), extended with the
    /// event name, and for system events with the change type and subject, because several
    /// different `sys` events can share one second.
    pub fn dedupe_key(&self) -> String {
        if let Some(MsgId(id)) = self.header.msg_id {
            return id.to_string();
        }
        if let Some(raw) = self.fields.non_empty("MsgId") {
            return raw.to_owned();
        }
        let mut key = format!("{}:{}:{}", self.header.from, self.header.create_time, self.header.msg_type);
        if let Some(event) = self.fields.non_empty("Event") {
            key.push(':');
            key.push_str(event);
        }
        for name in ["ChangeType", "UserID", "ExternalUserID", "ChatId", "Id", "TaskId", "ResponseCode", "OpenKfId"] {
            if let Some(value) = self.fields.non_empty(name) {
                key.push(':');
                key.push_str(value);
            }
        }
        // A 微信客服 callback's Token names it (a retry carries the same); it is a pull
        // credential, so only its hash goes into the id.
        if let Some(token) = self.fields.non_empty("Token") {
            key.push(':');
            key.push_str(&crate::core::outbound::short_hash(token));
        }
        key
    }

    /// The `Inbound` envelope for app `account`, received at `received_at` (unix seconds).
    pub fn to_inbound(&self, account: &str, received_at: u64) -> Inbound {
        let header = &self.header;
        let mut inbound = Inbound::direct(
            Channel::Wecom,
            account,
            format!("wecom:{account}:{}", self.dedupe_key()),
            &header.from,
            header.create_time,
            received_at,
            self.fields.to_json(),
        );
        if header.from == "sys" {
            inbound.conversation = Conversation { kind: ConversationKind::System, id: header.from.clone() };
        }
        match &self.body {
            WecomMessage::Text { content } => {
                inbound.kind = Kind::Text;
                inbound.text = Some(content.clone());
            }
            WecomMessage::Image { pic_url, media_id } => {
                inbound.kind = Kind::Image;
                inbound.media =
                    Some(Media { media_id: Some(media_id.clone()), url: pic_url.clone(), ..Media::default() });
            }
            WecomMessage::Voice { media_id, format } => {
                inbound.kind = Kind::Voice;
                inbound.media =
                    Some(Media { media_id: Some(media_id.clone()), format: format.clone(), ..Media::default() });
            }
            WecomMessage::Video { media_id, thumb_media_id } => {
                inbound.kind = Kind::Video;
                inbound.media = Some(Media {
                    media_id: Some(media_id.clone()),
                    thumb_media_id: thumb_media_id.clone(),
                    ..Media::default()
                });
            }
            WecomMessage::File { media_id, file_name } => {
                inbound.kind = Kind::File;
                inbound.media =
                    Some(Media { media_id: Some(media_id.clone()), file_name: file_name.clone(), ..Media::default() });
            }
            WecomMessage::Location { latitude, longitude, scale, label } => {
                inbound.kind = Kind::Location;
                inbound.location = Some(envelope::Location {
                    latitude: *latitude,
                    longitude: *longitude,
                    scale: *scale,
                    precision: None,
                    label: label.clone(),
                });
            }
            WecomMessage::Link { title, description, url, pic_url } => {
                inbound.kind = Kind::Link;
                inbound.link = Some(envelope::Link {
                    url: url.clone(),
                    title: title.clone(),
                    description: description.clone(),
                    pic_url: pic_url.clone(),
                });
            }
            WecomMessage::Event(event) => {
                inbound.kind = Kind::Event;
                if let WecomEvent::Location { latitude: Some(latitude), longitude: Some(longitude), precision } = event
                {
                    inbound.location = Some(envelope::Location {
                        latitude: *latitude,
                        longitude: *longitude,
                        precision: *precision,
                        ..Default::default()
                    });
                }
                inbound.event = Some(envelope::Event {
                    name: event.name(&self.fields).to_owned(),
                    key: self.fields.text("EventKey").map(str::to_owned),
                    change_type: owned(&self.fields, "ChangeType"),
                });
            }
            WecomMessage::Unsupported { .. } => inbound.kind = Kind::Unsupported,
        }
        inbound
    }
}

fn parse_event(fields: &Fields) -> Result<WecomEvent, MessageError> {
    let name = required(fields, "Event")?;
    let key = || fields.text("EventKey").unwrap_or_default().to_owned();
    let change_type = || required(fields, "ChangeType").map(str::to_owned);
    // Event names are compared case-insensitively: LOCATION comes upper-case.
    let event = match name.to_ascii_lowercase().as_str() {
        "subscribe" => WecomEvent::Subscribe,
        "unsubscribe" => WecomEvent::Unsubscribe,
        "enter_agent" => WecomEvent::EnterAgent { key: key() },
        "location" => WecomEvent::Location {
            latitude: lenient_f64(fields, "Latitude"),
            longitude: lenient_f64(fields, "Longitude"),
            precision: lenient_f64(fields, "Precision"),
        },
        "click" => WecomEvent::Click { key: key() },
        "view" => WecomEvent::View { url: key() },
        "change_contact" => WecomEvent::ChangeContact {
            change_type: change_type()?,
            user_id: owned(fields, "UserID"),
            party_id: owned(fields, "Id"),
        },
        "change_external_contact" => WecomEvent::ChangeExternalContact {
            change_type: change_type()?,
            user_id: owned(fields, "UserID"),
            external_user_id: owned(fields, "ExternalUserID"),
            welcome_code: owned(fields, "WelcomeCode"),
        },
        "change_external_chat" => WecomEvent::ChangeExternalChat {
            change_type: change_type()?,
            chat_id: required(fields, "ChatId")?.to_owned(),
            update_detail: owned(fields, "UpdateDetail"),
            members: texts(fields.get("MemChangeList").and_then(|v| v.node()).and_then(|n| n.get("Item"))),
        },
        "template_card_event" | "template_card_menu_event" => WecomEvent::TemplateCard {
            name: name.to_owned(),
            event_key: key(),
            task_id: required(fields, "TaskId")?.to_owned(),
            card_type: owned(fields, "CardType"),
            response_code: owned(fields, "ResponseCode"),
            selected: selected_items(fields),
        },
        "batch_job_result" => {
            let job = fields.get("BatchJob").and_then(|v| v.node());
            WecomEvent::BatchJobResult {
                job_id: job.and_then(|j| owned(j, "JobId")),
                job_type: job.and_then(|j| owned(j, "JobType")),
            }
        }
        _ => WecomEvent::Other { name: name.to_owned() },
    };
    Ok(event)
}

fn selected_items(fields: &Fields) -> Vec<SelectedItem> {
    let Some(items) = fields.get("SelectedItems").and_then(|v| v.node()).and_then(|n| n.get("SelectedItem")) else {
        return Vec::new();
    };
    items
        .items()
        .iter()
        .filter_map(|item| item.node())
        .map(|item| SelectedItem {
            question_key: item.text("QuestionKey").unwrap_or_default().to_owned(),
            option_ids: texts(item.get("OptionIds").and_then(|v| v.node()).and_then(|n| n.get("OptionId"))),
        })
        .collect()
}

/// A passive text reply (plaintext XML, before encryption).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextReply<'a> {
    /// The member's UserID (or the user's OpenID on an Official Account).
    pub to: &'a str,
    /// The CorpID (or the account's original id `gh_…`).
    pub from: &'a str,
    pub create_time: u64,
    pub content: &'a str,
    pub agent_id: Option<u32>,
}

impl TextReply<'_> {
    /// Renders the reply XML.
    pub fn render(&self) -> String {
        let mut out = XmlWriter::with_capacity(self.content.len() + self.to.len() + self.from.len() + 200);
        let mut number = itoa_buf();
        out.raw("<xml>");
        out.cdata_element("ToUserName", self.to);
        out.cdata_element("FromUserName", self.from);
        out.text_element("CreateTime", format_u64(&mut number, self.create_time));
        out.cdata_element("MsgType", "text");
        out.cdata_element("Content", self.content);
        if let Some(agent_id) = self.agent_id {
            out.text_element("AgentID", format_u64(&mut number, u64::from(agent_id)));
        }
        out.raw("</xml>");
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(inner: &str) -> Result<WecomCallbackMessage, MessageError> {
        WecomCallbackMessage::parse(&format!(
            "<xml><ToUserName>ww1</ToUserName><FromUserName>u</FromUserName><CreateTime>5</CreateTime>{inner}</xml>"
        ))
    }

    #[test]
    fn unknown_msg_type_becomes_unsupported_with_raw_fields() {
        let m = msg("<MsgType>hologram</MsgType><Depth>3</Depth>").unwrap();
        assert_eq!(m.body, WecomMessage::Unsupported { msg_type: "hologram".into() });
        let inbound = m.to_inbound("hr", 9);
        assert_eq!(inbound.kind, Kind::Unsupported);
        assert_eq!(inbound.raw["Depth"], "3");
    }

    #[test]
    fn unknown_event_is_forwarded_as_event() {
        let m = msg("<MsgType>event</MsgType><Event>brand_new</Event>").unwrap();
        assert_eq!(m.body, WecomMessage::Event(WecomEvent::Other { name: "brand_new".into() }));
        assert_eq!(m.to_inbound("hr", 9).event.unwrap().name, "brand_new");
    }

    #[test]
    fn rejects_missing_header_and_bad_numbers() {
        assert_eq!(
            WecomCallbackMessage::parse("<xml><MsgType>text</MsgType></xml>").unwrap_err(),
            MessageError::Missing("ToUserName")
        );
        assert_eq!(
            WecomCallbackMessage::parse("<xml><ToUserName>a</ToUserName><FromUserName>b</FromUserName><CreateTime>soon</CreateTime><MsgType>text</MsgType></xml>").unwrap_err(),
            MessageError::NotANumber("CreateTime")
        );
    }

    #[test]
    fn a_body_that_does_not_fit_its_type_is_forwarded_as_unsupported_not_refused() {
        for (inner, msg_type) in [
            ("<MsgType>text</MsgType>", "text"),
            ("<MsgType>image</MsgType><PicUrl>x</PicUrl>", "image"),
            ("<MsgType>location</MsgType><Location_X>north</Location_X><Location_Y>1</Location_Y>", "location"),
            ("<MsgType>location</MsgType><Location_X>NaN</Location_X><Location_Y>inf</Location_Y>", "location"),
            ("<MsgType>event</MsgType><Event>change_contact</Event>", "event"),
        ] {
            let m = msg(inner).unwrap();
            assert_eq!(m.body, WecomMessage::Unsupported { msg_type: msg_type.into() }, "{inner}");
            let inbound = m.to_inbound("hr", 0);
            assert_eq!(inbound.kind, Kind::Unsupported);
            assert_eq!(inbound.raw["MsgType"], msg_type);
        }
    }

    #[test]
    fn odd_optional_header_fields_are_kept_raw_and_still_dedupe() {
        let m = msg("<MsgType>text</MsgType><Content>x</Content><MsgId>ab-12</MsgId><AgentID>99999999999</AgentID>")
            .unwrap();
        assert_eq!((m.header.msg_id, m.header.agent_id), (None, None));
        assert_eq!(m.to_inbound("hr", 0).id, "wecom:hr:ab-12");
    }

    #[test]
    fn msg_id_keeps_all_64_bits() {
        let m = msg("<MsgType>text</MsgType><Content>x</Content><MsgId>18446744073709551615</MsgId>").unwrap();
        assert_eq!(m.header.msg_id, Some(MsgId(u64::MAX)));
        assert_eq!(m.to_inbound("hr", 0).id, "wecom:hr:18446744073709551615");
    }

    #[test]
    fn distinct_system_events_in_one_second_get_distinct_keys() {
        let a = msg("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>a</UserID>").unwrap();
        let b = msg("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>b</UserID>").unwrap();
        assert_ne!(a.dedupe_key(), b.dedupe_key());
        assert_eq!(a.dedupe_key(), msg("<MsgType>event</MsgType><Event>change_contact</Event><ChangeType>delete_user</ChangeType><UserID>a</UserID>").unwrap().dedupe_key());
    }

    #[test]
    fn formats_numbers_without_allocating() {
        let mut buf = itoa_buf();
        assert_eq!(format_u64(&mut buf, 0), "0");
        assert_eq!(format_u64(&mut buf, u64::MAX), "18446744073709551615");
    }
}
