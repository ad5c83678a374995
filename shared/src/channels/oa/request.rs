//! Official Account callbacks as WeChat sends them, for `wxbridge simulate` and tests: a message
//! in plaintext, compatible or safe mode with the query string WeChat would use, and the opening
//! of the passive reply that comes back.

use crate::channels::oa::callback::Mode;
use crate::channels::wecom::simulate::SignedCallback;
use crate::protocol::crypto::{plain_signature, CryptoError, MsgCrypt};
use crate::protocol::xml::XmlWriter;

/// A text message from `open_id` to the account `to_account` (its original id, `gh_…`).
pub fn text_message(to_account: &str, open_id: &str, text: &str, msg_id: u64, create_time: u64) -> String {
    let mut out = XmlWriter::with_capacity(text.len() + 300);
    out.raw("<xml>")
        .cdata_element("ToUserName", to_account)
        .cdata_element("FromUserName", open_id)
        .text_element("CreateTime", &create_time.to_string())
        .cdata_element("MsgType", "text")
        .cdata_element("Content", text)
        .text_element("MsgId", &msg_id.to_string())
        .raw("</xml>");
    out.finish()
}

/// The XML of a follower's picture: its `PicUrl` and the `MediaId` that `media/get` serves.
pub fn image_message(
    to_account: &str,
    open_id: &str,
    pic_url: &str,
    media_id: &str,
    msg_id: u64,
    create_time: u64,
) -> String {
    let mut out = XmlWriter::with_capacity(400);
    out.raw("<xml>")
        .cdata_element("ToUserName", to_account)
        .cdata_element("FromUserName", open_id)
        .text_element("CreateTime", &create_time.to_string())
        .cdata_element("MsgType", "image")
        .cdata_element("PicUrl", pic_url)
        .cdata_element("MediaId", media_id)
        .text_element("MsgId", &msg_id.to_string())
        .raw("</xml>");
    out.finish()
}

/// Signs (and in compatible and safe mode encrypts) `plaintext` into the callback WeChat would
/// send. `crypt` is needed for the encrypted modes; without it the callback is plaintext.
#[allow(clippy::too_many_arguments)]
pub fn sign_callback(
    token: &str,
    crypt: Option<&MsgCrypt>,
    mode: Mode,
    plaintext: &str,
    open_id: &str,
    timestamp: u64,
    nonce: &str,
    random: [u8; 16],
) -> SignedCallback {
    let ts = timestamp.to_string();
    let base =
        format!("signature={}&timestamp={ts}&nonce={nonce}&openid={open_id}", plain_signature(token, &ts, nonce));
    let crypt = match (mode, crypt) {
        (Mode::Plain, _) | (_, None) => return SignedCallback { query: base, body: plaintext.to_owned() },
        (_, Some(crypt)) => crypt,
    };
    let encrypt = crypt.encrypt(plaintext, random);
    let query = format!("{base}&encrypt_type=aes&msg_signature={}", crypt.signature(&ts, nonce, &encrypt));
    let to_user = text_of(plaintext, "ToUserName");
    let mut body = XmlWriter::with_capacity(encrypt.len() + plaintext.len() + 100);
    match mode {
        // Compatible mode: the plaintext fields and the ciphertext side by side.
        Mode::Compatible => {
            let inner =
                plaintext.trim().strip_prefix("<xml>").and_then(|x| x.strip_suffix("</xml>")).unwrap_or_default();
            body.raw("<xml>").raw(inner).cdata_element("Encrypt", &encrypt).raw("</xml>");
        }
        _ => {
            body.raw("<xml>").cdata_element("ToUserName", &to_user).cdata_element("Encrypt", &encrypt).raw("</xml>");
        }
    }
    SignedCallback { query, body: body.finish() }
}

/// The reply XML inside a passive reply: as is in plaintext, else checked and decrypted.
pub fn open_reply(crypt: Option<&MsgCrypt>, body: &str) -> Result<String, CryptoError> {
    let encrypt = text_of(body, "Encrypt");
    if encrypt.is_empty() {
        return Ok(body.to_owned());
    }
    let Some(crypt) = crypt else { return Err(CryptoError::SignatureMismatch) };
    let (signature, timestamp, nonce) =
        (text_of(body, "MsgSignature"), text_of(body, "TimeStamp"), text_of(body, "Nonce"));
    crypt.decrypt(crypt.verify(&signature, &timestamp, &nonce, &encrypt)?)
}

/// A top-level element's text, empty when absent or unreadable.
fn text_of(xml: &str, name: &str) -> String {
    crate::protocol::xml::top_level_text(xml, name).ok().flatten().map(|t| t.into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::oa::callback::OaAuth;
    use crate::protocol::crypto::EncodingAesKey;
    use crate::protocol::query::Query;

    use crate::testing::fixtures::OA_AES_KEY as KEY;

    #[test]
    fn each_mode_opens_on_the_callback_side_to_the_same_message() {
        let crypt = MsgCrypt::new("tok", &EncodingAesKey::parse(KEY).unwrap(), "wx1");
        let token = secrecy::SecretString::from("tok".to_owned());
        let xml = text_message("gh_1", "oUser", "你好 <&>", 42, 1_700_000_000);
        for mode in [Mode::Plain, Mode::Compatible, Mode::Safe] {
            // An account with a key refuses plaintext (no downgrade): plain mode is for keyless ones.
            let auth = OaAuth::new(&token, (mode != Mode::Plain).then(|| crypt.clone()));
            let signed = sign_callback("tok", Some(&crypt), mode, &xml, "oUser", 1_700_000_000, "77", [7; 16]);
            let query = Query::parse(&signed.query).unwrap();
            let (seen, opened) = auth.open(&query, &signed.body).unwrap();
            assert_eq!(seen, mode);
            assert_eq!(Some(text_of(&opened, "Content")).as_deref(), Some("你好 <&>"), "{mode:?}");
        }
    }

    #[test]
    fn a_sealed_reply_opens_and_a_tampered_one_does_not() {
        let crypt = MsgCrypt::new("tok", &EncodingAesKey::parse(KEY).unwrap(), "wx1");
        let auth = OaAuth::new(&secrecy::SecretString::from("tok".to_owned()), Some(crypt.clone()));
        let sealed = auth.seal(Mode::Safe, "<xml><Content>hi</Content></xml>", [1; 16], "1700000000", "5");
        assert_eq!(open_reply(Some(&crypt), &sealed).unwrap(), "<xml><Content>hi</Content></xml>");
        let tampered = sealed.replacen("<Nonce><![CDATA[5]]>", "<Nonce><![CDATA[6]]>", 1);
        assert_ne!(tampered, sealed, "the nonce is in the reply");
        assert!(open_reply(Some(&crypt), &tampered).is_err());
        assert_eq!(open_reply(None, "<xml>plain</xml>").unwrap(), "<xml>plain</xml>");
    }
}
