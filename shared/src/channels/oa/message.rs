//! Official Account callback messages: plaintext (or decrypted) XML → [`Fields`] → [`OaMessage`].

use crate::core::envelope::{self, Channel, Inbound, Kind, Media};
use crate::protocol::fields::{common, lenient_f64, number, owned, required, Common, MessageError};
use crate::protocol::xml::{self, Fields};

/// The fields every Official Account callback carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The account's original id (`gh_…`).
    pub to: String,
    /// The user's OpenID.
    pub from: String,
    pub create_time: u64,
    pub msg_type: String,
    pub msg_id: Option<u64>,
}

/// An Official Account event (`MsgType` = `event`).
#[derive(Debug, Clone, PartialEq)]
pub enum OaEvent {
    /// A follow; `scene` is set when it came through a parametric QR code (`qrscene_` stripped).
    Subscribe {
        scene: Option<String>,
        ticket: Option<String>,
    },
    Unsubscribe,
    /// An already-following user scanned a parametric QR code.
    Scan {
        scene: String,
        ticket: Option<String>,
    },
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
        menu_id: Option<String>,
    },
    /// Any other event, forwarded with its raw fields.
    Other {
        name: String,
    },
}

/// The typed body of an Official Account callback.
#[derive(Debug, Clone, PartialEq)]
pub enum OaMessage {
    Text {
        content: String,
    },
    Image {
        pic_url: Option<String>,
        media_id: String,
    },
    /// `recognition` is WeChat's speech-to-text, when the account enabled it.
    Voice {
        media_id: String,
        format: Option<String>,
        recognition: Option<String>,
    },
    Video {
        media_id: String,
        thumb_media_id: Option<String>,
        short: bool,
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
    },
    Event(OaEvent),
    Unsupported {
        msg_type: String,
    },
}

/// A parsed Official Account callback.
#[derive(Debug, Clone, PartialEq)]
pub struct OaCallbackMessage {
    pub header: Header,
    pub body: OaMessage,
    pub fields: Fields,
}

impl OaCallbackMessage {
    pub fn parse(xml_text: &str) -> Result<Self, MessageError> {
        Self::from_fields(xml::parse(xml_text)?)
    }

    /// Only the header is required: a body that does not fit its type is forwarded as
    /// unsupported with its raw fields rather than refused (and lost).
    pub fn from_fields(fields: Fields) -> Result<Self, MessageError> {
        let Common { to, from, create_time, msg_type } = common(&fields)?;
        let header = Header { to, from, create_time, msg_type, msg_id: number(&fields, "MsgId").ok().flatten() };
        let body = body(&header, &fields).unwrap_or_else(|err| {
            tracing::warn!(msg_type = %header.msg_type, error = %err, "message body does not fit its type; forwarded as unsupported");
            OaMessage::Unsupported { msg_type: header.msg_type.clone() }
        });
        Ok(Self { header, body, fields })
    }

    /// Stable across WeChat's retries: the MsgId, else sender + time + event (the documented
    /// rule, with the event name so two events in one second stay apart).
    pub fn dedupe_key(&self) -> String {
        if let Some(id) = self.fields.non_empty("MsgId") {
            return id.to_owned();
        }
        let mut key = format!("{}:{}:{}", self.header.from, self.header.create_time, self.header.msg_type);
        if let Some(event) = self.fields.non_empty("Event") {
            key.push(':');
            key.push_str(event);
        }
        key
    }

    /// The `Inbound` envelope for account `account`, received at `received_at` (unix seconds).
    pub fn to_inbound(&self, account: &str, received_at: u64) -> Inbound {
        let header = &self.header;
        let id = format!("oa:{account}:{}", self.dedupe_key());
        let mut inbound = Inbound::direct(
            Channel::Oa,
            account,
            id,
            &header.from,
            header.create_time,
            received_at,
            self.fields.to_json(),
        );
        let media = |media_id: &str| Media { media_id: Some(media_id.to_owned()), ..Media::default() };
        match &self.body {
            OaMessage::Text { content } => {
                inbound.kind = Kind::Text;
                inbound.text = Some(content.clone());
            }
            OaMessage::Image { pic_url, media_id } => {
                inbound.kind = Kind::Image;
                inbound.media = Some(Media { url: pic_url.clone(), ..media(media_id) });
            }
            OaMessage::Voice { media_id, format, recognition } => {
                inbound.kind = Kind::Voice;
                inbound.media =
                    Some(Media { format: format.clone(), transcript: recognition.clone(), ..media(media_id) });
                // The transcript, when WeChat made one, is what a text bot can answer.
                inbound.text = recognition.clone();
            }
            OaMessage::Video { media_id, thumb_media_id, .. } => {
                inbound.kind = Kind::Video;
                inbound.media = Some(Media { thumb_media_id: thumb_media_id.clone(), ..media(media_id) });
            }
            OaMessage::Location { latitude, longitude, scale, label } => {
                inbound.kind = Kind::Location;
                inbound.location = Some(envelope::Location {
                    latitude: *latitude,
                    longitude: *longitude,
                    scale: *scale,
                    precision: None,
                    label: label.clone(),
                });
            }
            OaMessage::Link { title, description, url } => {
                inbound.kind = Kind::Link;
                inbound.link = Some(envelope::Link {
                    url: url.clone(),
                    title: title.clone(),
                    description: description.clone(),
                    pic_url: None,
                });
            }
            OaMessage::Event(event) => {
                inbound.kind = Kind::Event;
                if let OaEvent::Location { latitude: Some(latitude), longitude: Some(longitude), precision } = event {
                    inbound.location = Some(envelope::Location {
                        latitude: *latitude,
                        longitude: *longitude,
                        precision: *precision,
                        ..Default::default()
                    });
                }
                inbound.event = Some(envelope::Event {
                    name: self.fields.text("Event").unwrap_or_default().to_owned(),
                    key: self.fields.text("EventKey").map(str::to_owned),
                    change_type: None,
                });
            }
            OaMessage::Unsupported { .. } => {}
        }
        inbound
    }
}

fn body(header: &Header, fields: &Fields) -> Result<OaMessage, MessageError> {
    let media_id = || required(fields, "MediaId").map(str::to_owned);
    Ok(match header.msg_type.as_str() {
        "text" => OaMessage::Text { content: required(fields, "Content")?.to_owned() },
        "image" => OaMessage::Image { pic_url: owned(fields, "PicUrl"), media_id: media_id()? },
        "voice" => OaMessage::Voice {
            media_id: media_id()?,
            format: owned(fields, "Format"),
            recognition: owned(fields, "Recognition"),
        },
        "video" | "shortvideo" => OaMessage::Video {
            media_id: media_id()?,
            thumb_media_id: owned(fields, "ThumbMediaId"),
            short: header.msg_type == "shortvideo",
        },
        "location" => OaMessage::Location {
            latitude: number(fields, "Location_X")?.ok_or(MessageError::Missing("Location_X"))?,
            longitude: number(fields, "Location_Y")?.ok_or(MessageError::Missing("Location_Y"))?,
            scale: lenient_f64(fields, "Scale"),
            label: owned(fields, "Label"),
        },
        "link" => OaMessage::Link {
            title: owned(fields, "Title"),
            description: owned(fields, "Description"),
            url: required(fields, "Url")?.to_owned(),
        },
        "event" => OaMessage::Event(event(fields)?),
        other => OaMessage::Unsupported { msg_type: other.to_owned() },
    })
}

fn event(fields: &Fields) -> Result<OaEvent, MessageError> {
    let name = required(fields, "Event")?;
    let key = || fields.text("EventKey").unwrap_or_default().to_owned();
    // SCAN, LOCATION, CLICK and VIEW come upper-case, subscribe lower-case.
    Ok(match name.to_ascii_lowercase().as_str() {
        "subscribe" => OaEvent::Subscribe {
            scene: fields.non_empty("EventKey").map(|k| k.strip_prefix("qrscene_").unwrap_or(k).to_owned()),
            ticket: owned(fields, "Ticket"),
        },
        "unsubscribe" => OaEvent::Unsubscribe,
        "scan" => OaEvent::Scan { scene: key(), ticket: owned(fields, "Ticket") },
        "location" => OaEvent::Location {
            latitude: lenient_f64(fields, "Latitude"),
            longitude: lenient_f64(fields, "Longitude"),
            precision: lenient_f64(fields, "Precision"),
        },
        "click" => OaEvent::Click { key: key() },
        "view" => OaEvent::View { url: key(), menu_id: owned(fields, "MenuId") },
        _ => OaEvent::Other { name: name.to_owned() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(inner: &str) -> OaCallbackMessage {
        OaCallbackMessage::parse(&format!(
            "<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>9</CreateTime>{inner}</xml>"
        ))
        .unwrap()
    }

    #[test]
    fn unknown_types_and_events_are_forwarded_not_refused() {
        assert_eq!(
            msg("<MsgType>miniprogrampage</MsgType>").body,
            OaMessage::Unsupported { msg_type: "miniprogrampage".into() }
        );
        assert_eq!(msg("<MsgType>image</MsgType>").body, OaMessage::Unsupported { msg_type: "image".into() });
        let e = msg("<MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event>");
        assert_eq!(e.body, OaMessage::Event(OaEvent::Other { name: "TEMPLATESENDJOBFINISH".into() }));
        assert_eq!(e.to_inbound("news", 0).event.unwrap().name, "TEMPLATESENDJOBFINISH");
    }

    #[test]
    fn a_voice_transcript_becomes_the_text() {
        let m = msg("<MsgType>voice</MsgType><MediaId>m</MediaId><Format>amr</Format><Recognition>你好</Recognition><MsgId>5</MsgId>");
        let inbound = m.to_inbound("news", 0);
        assert_eq!((inbound.kind, inbound.text.as_deref()), (Kind::Voice, Some("你好")));
        assert_eq!(inbound.id, "oa:news:5");
    }
}
