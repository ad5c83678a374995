//! Callbacks as WeCom sends them, for `wxbridge simulate` and tests: the message XML encrypted
//! for the app, signed, with the query string WeChat would use.

use crate::protocol::crypto::MsgCrypt;
use crate::protocol::xml::XmlWriter;

/// A signed, encrypted `POST /wecom/{app}` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCallback {
    /// `msg_signature=…&timestamp=…&nonce=…` (no value needs percent-encoding).
    pub query: String,
    pub body: String,
}

/// A text message from `from_user` to the app, as decrypted XML.
pub fn text_message(
    corp_id: &str,
    agent_id: u32,
    from_user: &str,
    text: &str,
    msg_id: u64,
    create_time: u64,
) -> String {
    let mut out = XmlWriter::with_capacity(text.len() + 300);
    out.raw("<xml>")
        .cdata_element("ToUserName", corp_id)
        .cdata_element("FromUserName", from_user)
        .text_element("CreateTime", &create_time.to_string())
        .cdata_element("MsgType", "text")
        .cdata_element("Content", text)
        .text_element("MsgId", &msg_id.to_string())
        .text_element("AgentID", &agent_id.to_string())
        .raw("</xml>");
    out.finish()
}

/// An image message from `from_user` to the app, as decrypted XML: WeCom's `PicUrl` and the
/// `MediaId` to fetch it by.
pub fn image_message(
    corp_id: &str,
    agent_id: u32,
    from_user: &str,
    media_id: &str,
    msg_id: u64,
    create_time: u64,
) -> String {
    let mut out = XmlWriter::with_capacity(400);
    out.raw("<xml>")
        .cdata_element("ToUserName", corp_id)
        .cdata_element("FromUserName", from_user)
        .text_element("CreateTime", &create_time.to_string())
        .cdata_element("MsgType", "image")
        .cdata_element("PicUrl", "https://wework.qpic.cn/wwpic/placeholder/0")
        .cdata_element("MediaId", media_id)
        .text_element("MsgId", &msg_id.to_string())
        .text_element("AgentID", &agent_id.to_string())
        .raw("</xml>");
    out.finish()
}

/// The `kf_msg_or_event` event WeChat sends a 微信客服 account's serving app when a customer
/// writes, as decrypted XML: no message, only the Token its pull must carry.
pub fn kf_msg_or_event(corp_id: &str, token: &str, open_kfid: &str, create_time: u64) -> String {
    let mut out = XmlWriter::with_capacity(300);
    out.raw("<xml>")
        .cdata_element("ToUserName", corp_id)
        .text_element("CreateTime", &create_time.to_string())
        .cdata_element("MsgType", "event")
        .cdata_element("Event", "kf_msg_or_event")
        .cdata_element("Token", token)
        .cdata_element("OpenKfId", open_kfid)
        .raw("</xml>");
    out.finish()
}

/// Encrypts and signs `plaintext` into the callback WeCom would send at `timestamp`.
pub fn sign_callback(
    crypt: &MsgCrypt,
    plaintext: &str,
    timestamp: u64,
    nonce: &str,
    random: [u8; 16],
) -> SignedCallback {
    let encrypt = crypt.encrypt(plaintext, random);
    let ts = timestamp.to_string();
    let signature = crypt.signature(&ts, nonce, &encrypt);
    let mut body = XmlWriter::with_capacity(encrypt.len() + 200);
    body.raw("<xml>").cdata_element("ToUserName", crypt.receive_id()).cdata_element("Encrypt", &encrypt).raw("</xml>");
    SignedCallback { query: format!("msg_signature={signature}&timestamp={ts}&nonce={nonce}"), body: body.finish() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::wecom::WecomCallbackMessage;
    use crate::protocol::crypto::EncodingAesKey;
    use crate::protocol::query::Query;

    #[test]
    fn a_signed_callback_verifies_decrypts_and_parses() {
        let crypt = MsgCrypt::new(
            "tok123",
            &EncodingAesKey::parse("nRDubK1SCq0IU7bkPJDwdgiZbNr0SLjxD0OT65I4uuY").unwrap(),
            "ww1",
        );
        let xml = text_message("ww1", 7, "alice", "hi ]]> there", 42, 1_767_225_600);
        let cb = sign_callback(&crypt, &xml, 1_767_225_600, "n1", [3; 16]);
        let q = Query::parse(&cb.query).unwrap();
        let encrypt = crate::protocol::xml::parse(&cb.body).unwrap().text("Encrypt").unwrap().to_owned();
        let proof = crypt.verify(q.get("msg_signature").unwrap(), q.get("timestamp").unwrap(), "n1", &encrypt).unwrap();
        let message = WecomCallbackMessage::parse(&crypt.decrypt(proof).unwrap()).unwrap();
        assert_eq!(message.to_inbound("demo", 0).text.as_deref(), Some("hi ]]> there"));
    }
}
