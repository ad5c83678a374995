//! Passive replies: the answer in the HTTP response to an Official Account callback.

use crate::core::envelope::Article;
use crate::protocol::fields::{format_u64, itoa_buf};
use crate::protocol::xml::XmlWriter;

/// What to answer when there is nothing to say: WeChat then does nothing and does not retry.
pub const SUCCESS: &str = "success";

/// A passive reply's content. Media must have been uploaded before (a `media_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveReply {
    Text {
        content: String,
    },
    Image {
        media_id: String,
    },
    Voice {
        media_id: String,
    },
    Video {
        media_id: String,
        title: Option<String>,
        description: Option<String>,
    },
    Music {
        thumb_media_id: String,
        title: Option<String>,
        description: Option<String>,
        music_url: Option<String>,
        hq_music_url: Option<String>,
    },
    /// One article when answering a user's message; up to 8 otherwise.
    News {
        articles: Vec<Article>,
    },
}

impl PassiveReply {
    /// The reply XML from the account (`gh_…`) to the user (OpenID).
    pub fn render(&self, to_user: &str, from_account: &str, create_time: u64) -> String {
        let mut out = XmlWriter::with_capacity(512);
        let mut number = itoa_buf();
        out.raw("<xml>");
        out.cdata_element("ToUserName", to_user);
        out.cdata_element("FromUserName", from_account);
        out.text_element("CreateTime", format_u64(&mut number, create_time));
        let optional = |out: &mut XmlWriter, name: &str, value: &Option<String>| {
            if let Some(value) = value {
                out.cdata_element(name, value);
            }
        };
        match self {
            Self::Text { content } => {
                out.cdata_element("MsgType", "text").cdata_element("Content", content);
            }
            Self::Image { media_id } => {
                out.cdata_element("MsgType", "image").raw("<Image>").cdata_element("MediaId", media_id).raw("</Image>");
            }
            Self::Voice { media_id } => {
                out.cdata_element("MsgType", "voice").raw("<Voice>").cdata_element("MediaId", media_id).raw("</Voice>");
            }
            Self::Video { media_id, title, description } => {
                out.cdata_element("MsgType", "video").raw("<Video>").cdata_element("MediaId", media_id);
                optional(&mut out, "Title", title);
                optional(&mut out, "Description", description);
                out.raw("</Video>");
            }
            Self::Music { thumb_media_id, title, description, music_url, hq_music_url } => {
                out.cdata_element("MsgType", "music").raw("<Music>");
                optional(&mut out, "Title", title);
                optional(&mut out, "Description", description);
                optional(&mut out, "MusicUrl", music_url);
                optional(&mut out, "HQMusicUrl", hq_music_url);
                out.cdata_element("ThumbMediaId", thumb_media_id).raw("</Music>");
            }
            Self::News { articles } => {
                out.cdata_element("MsgType", "news");
                out.text_element("ArticleCount", format_u64(&mut number, articles.len() as u64));
                out.raw("<Articles>");
                for article in articles {
                    out.raw("<item>").cdata_element("Title", &article.title);
                    out.cdata_element("Description", article.description.as_deref().unwrap_or_default());
                    out.cdata_element("PicUrl", article.picurl.as_deref().unwrap_or_default());
                    out.cdata_element("Url", &article.url).raw("</item>");
                }
                out.raw("</Articles>");
            }
        }
        out.raw("</xml>");
        out.finish()
    }
}
