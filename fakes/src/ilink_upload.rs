//! iLink files out (media.md §4.3, ilink.md §6 and §9): `getuploadurl` reserves an upload for
//! one user, `POST /c2c/upload` takes its ciphertext, and a `sendmessage` media item names the
//! upload by the CDN's `x-encrypted-param` and its key.
//!
//! * `getuploadurl` (after the checks every bot POST passes, in `ilink`): `filekey` and `aeskey`
//!   32 hex digits, `rawfilemd5` 32 hex digits, `filesize == floor(rawsize / 16) * 16 + 16`,
//!   `media_type` 1 to 4, `no_need_thumb: true` (no thumbnail fields), `to_user_id` a user who
//!   wrote to the bot (else `-2 prepare failed`). A VOICE upload (4) is accepted, as some reports
//!   say the service does, others that it refused it; since a voice item is never shown, it is
//!   also a `problems()` line. Answers `upload_full_url` on this fake, or only `upload_param`,
//!   or a refusal (`FakeWechat::set_ilink_upload_answer`).
//! * `POST /c2c/upload?encrypted_query_param=&filekey=`: a pending reservation's parameter and
//!   file key, `Content-Type: application/octet-stream`, `filesize` bytes that decrypt
//!   (AES-128-ECB, PKCS#7) with the announced key to `rawsize` bytes of that MD5. Answers 200
//!   with `x-encrypted-param` (the ciphertext is then served by `/c2c/download` under it); a
//!   refusal is a 400 with `x-error-message` and an empty body.
//! * A media item (image 2, voice 3, file 4, video 5) must name an upload made by this bot for
//!   this `to_user_id`, with `media.aes_key` decoding (base64 of the 32 hex digits, or of the 16
//!   raw bytes) to its key; an image's `mid_size` and a video's `video_size` are the ciphertext
//!   size, a file's `len` the plaintext size as a decimal string.

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::media::{add_cdn, cdn_param};
use crate::media_store::ecb_decrypt;
use crate::state::State;
use crate::types::{CdnUploadFault, IlinkMediaSend, IlinkUpload, IlinkUploadAnswer};
use crate::wire::{ilink_json, random_hex, show, Reject, Req};

fn is_hex32(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The ciphertext size of `rawsize` bytes under AES-128-ECB with PKCS#7.
fn sealed_size(rawsize: u64) -> u64 {
    rawsize / 16 * 16 + 16
}

/// `getuploadurl` once the bot POST checks passed: checks the fields, reserves the upload and
/// answers as the test set up.
pub(crate) fn reserve(st: &mut State, req: &Req, bot: &str, top: &Map<String, Value>) -> Result<Response, Reject> {
    let text = |name: &str| top.get(name).and_then(Value::as_str);
    for name in ["filekey", "aeskey", "rawfilemd5"] {
        if !text(name).is_some_and(is_hex32) {
            return Err(Reject::ilink_invalid(format!("{name} must be 32 hex digits, got {}", show(top.get(name)))));
        }
    }
    let media_type = match top.get("media_type").and_then(Value::as_u64) {
        Some(t @ 1..=4) => t as u8,
        _ => {
            return Err(Reject::ilink_invalid(format!(
                "media_type must be 1 (image), 2 (video), 3 (file) or 4 (voice), got {}",
                show(top.get("media_type"))
            )))
        }
    };
    let Some(rawsize) = top.get("rawsize").and_then(Value::as_u64) else {
        return Err(Reject::ilink_invalid(format!("rawsize must be a byte count, got {}", show(top.get("rawsize")))));
    };
    let filesize = top.get("filesize").and_then(Value::as_u64);
    let sealed = sealed_size(rawsize);
    if filesize != Some(sealed) {
        return Err(Reject::ilink_invalid(format!(
            "filesize must be the AES-128-ECB/PKCS#7 ciphertext size of {rawsize} bytes, {sealed}, got {}",
            show(top.get("filesize"))
        )));
    }
    if top.get("no_need_thumb") != Some(&Value::Bool(true)) {
        return Err(Reject::ilink_invalid(format!(
            "no_need_thumb must be true (this fake takes no thumbnails), got {}",
            show(top.get("no_need_thumb"))
        )));
    }
    let to_user = match text("to_user_id") {
        Some(u) if !u.is_empty() => u.to_owned(),
        _ => {
            return Err(Reject::ilink_invalid(format!(
                "to_user_id must be a non-empty string, got {}",
                show(top.get("to_user_id"))
            )))
        }
    };
    if !st.ilink_users.contains_key(&(bot.to_owned(), to_user.clone())) {
        return Err(Reject::ilink_prepare_failed(format!("to_user_id {to_user:?} has never written to this bot")));
    }
    if media_type == 4 {
        st.problems.push(format!(
            "{} {}: media_type 4 (VOICE) accepted, but iLink shows no outbound voice; send audio as a file (3)",
            req.method, req.path
        ));
    }
    let answer = st.media.ilink.answer.clone();
    if let IlinkUploadAnswer::Ret(code) = answer {
        return Ok(ilink_json(&json!({"ret": code})));
    }
    let filekey = text("filekey").unwrap_or_default().to_owned();
    let upload_param = cdn_param();
    let uploads = &mut st.media.ilink;
    uploads.pending.insert(upload_param.clone(), uploads.uploads.len());
    uploads.uploads.push(IlinkUpload {
        bot_token: bot.to_owned(),
        to_user_id: to_user,
        media_type,
        filekey: filekey.clone(),
        aeskey: text("aeskey").unwrap_or_default().to_ascii_lowercase(),
        rawsize,
        rawfilemd5: text("rawfilemd5").unwrap_or_default().to_ascii_lowercase(),
        encrypt_query_param: None,
        bytes: None,
    });
    let full_url = |base: &str| {
        let query =
            [("encrypted_query_param", upload_param.as_str()), ("filekey", &filekey), ("taskid", &random_hex(16))];
        reqwest::Url::parse_with_params(&format!("{}/c2c/upload", base.trim_end_matches('/')), query)
            .map(String::from)
            .unwrap_or_default()
    };
    Ok(ilink_json(&match answer {
        IlinkUploadAnswer::ParamOnly => json!({"upload_param": upload_param, "thumb_upload_param": ""}),
        IlinkUploadAnswer::FullUrlOn(base) => json!({"upload_full_url": full_url(&base)}),
        IlinkUploadAnswer::FullUrl | IlinkUploadAnswer::Ret(_) => json!({"upload_full_url": full_url(&st.base_url)}),
    }))
}

/// A CDN refusal: 400 (or `status`) with `x-error-message` and an empty body.
fn refused(status: StatusCode, message: &str, detail: impl Into<String>) -> Reject {
    let value = HeaderValue::from_str(message).unwrap_or(HeaderValue::from_static("bad request"));
    Reject::page(status, None, "", detail).with_header(HeaderName::from_static("x-error-message"), value)
}

/// `POST /c2c/upload?encrypted_query_param=&filekey=`: the ciphertext of a reserved upload.
pub(crate) fn cdn_upload(st: &mut State, req: &Req) -> Result<Response, Reject> {
    if req.method != Method::POST {
        return Err(Reject::page(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "",
            format!("{} on the CDN upload URL (POST only)", req.method),
        ));
    }
    match st.media.ilink.faults.pop_front() {
        Some(CdnUploadFault::ServerError) => return Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Some(CdnUploadFault::NoParam) => return Ok(StatusCode::OK.into_response()),
        Some(CdnUploadFault::Refused(status, message)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let value = HeaderValue::from_str(&message).unwrap_or(HeaderValue::from_static("refused"));
            let mut response = status.into_response();
            response.headers_mut().insert(HeaderName::from_static("x-error-message"), value);
            return Ok(response);
        }
        None => {}
    }
    let param = req.query("encrypted_query_param").unwrap_or_default();
    let Some(&index) = st.media.ilink.pending.get(param) else {
        let detail = if param.contains(' ') && st.media.ilink.pending.contains_key(&param.replace(' ', "+")) {
            "encrypted_query_param arrived with spaces for its '+': it was not percent-encoded".to_owned()
        } else {
            format!("encrypted_query_param {param:?} names no pending upload (never reserved, or already uploaded)")
        };
        return Err(refused(StatusCode::BAD_REQUEST, "invalid encrypted_query_param", detail));
    };
    let upload = &st.media.ilink.uploads[index];
    if req.query("filekey") != Some(upload.filekey.as_str()) {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "filekey mismatch",
            format!("filekey {:?} is not the one reserved, {:?}", req.query("filekey"), upload.filekey),
        ));
    }
    let content_type = req.header("content-type").and_then(|c| c.split(';').next()).map(str::trim);
    if !content_type.is_some_and(|c| c.eq_ignore_ascii_case("application/octet-stream")) {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "bad content type",
            format!("Content-Type must be application/octet-stream, got {:?}", req.header("content-type")),
        ));
    }
    let sealed = sealed_size(upload.rawsize);
    if req.body.len() as u64 != sealed {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "filesize mismatch",
            format!("the body is {} bytes, the reserved filesize {sealed}", req.body.len()),
        ));
    }
    let key = hex16(&upload.aeskey);
    let Some(plaintext) = key.and_then(|key| ecb_decrypt(&req.body, &key)) else {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "decrypt failed",
            "the body does not decrypt (AES-128-ECB, PKCS#7) with the aeskey announced in getuploadurl",
        ));
    };
    if plaintext.len() as u64 != upload.rawsize {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "rawsize mismatch",
            format!("the file is {} bytes, the reserved rawsize {}", plaintext.len(), upload.rawsize),
        ));
    }
    let md5: String = <md5::Md5 as md5::Digest>::digest(&plaintext).iter().map(|b| format!("{b:02x}")).collect();
    if !upload.rawfilemd5.eq_ignore_ascii_case(&md5) {
        return Err(refused(
            StatusCode::BAD_REQUEST,
            "md5 mismatch",
            format!("the file's MD5 is {md5}, the reserved rawfilemd5 {}", upload.rawfilemd5),
        ));
    }
    let download = add_cdn(st, req.body.to_vec());
    st.media.ilink.pending.remove(param);
    let upload = &mut st.media.ilink.uploads[index];
    upload.encrypt_query_param = Some(download.clone());
    upload.bytes = Some(plaintext);
    let mut response = Response::new(Body::empty());
    let value = HeaderValue::from_str(&download).unwrap_or(HeaderValue::from_static(""));
    response.headers_mut().insert(HeaderName::from_static("x-encrypted-param"), value);
    Ok(response)
}

fn hex16(text: &str) -> Option<[u8; 16]> {
    if !is_hex32(text) {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Checks a media item of a `sendmessage` from `bot` to `to_user` (item type 2, 3, 4 or 5);
/// returns what it sends.
pub(crate) fn check_item(
    st: &mut State,
    req: &Req,
    bot: &str,
    to_user: &str,
    item: &Value,
) -> Result<IlinkMediaSend, Reject> {
    let item_type = item.get("type").and_then(Value::as_u64).unwrap_or_default();
    let (field, upload_type) = match item_type {
        2 => ("image_item", 1),
        3 => ("voice_item", 4),
        4 => ("file_item", 3),
        5 => ("video_item", 2),
        _ => return Err(Reject::ilink_invalid(format!("item type {} is not a media item", show(item.get("type"))))),
    };
    let Some(Value::Object(body)) = item.get(field) else {
        return Err(Reject::ilink_invalid(format!("an item of type {item_type} needs {field}, an object")));
    };
    let Some(Value::Object(media)) = body.get("media") else {
        return Err(Reject::ilink_invalid(format!("{field}.media must be an object, got {}", show(body.get("media")))));
    };
    let param = match media.get("encrypt_query_param") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        other => {
            return Err(Reject::ilink_invalid(format!(
                "{field}.media.encrypt_query_param must be a non-empty string, got {}",
                show(other)
            )))
        }
    };
    let Some(upload) = st.media.ilink.uploads.iter().find(|u| u.encrypt_query_param.as_deref() == Some(&param)) else {
        return Err(Reject::ilink_invalid(format!(
            "{field}.media.encrypt_query_param names no file uploaded to the CDN (use its x-encrypted-param)"
        )));
    };
    if upload.bot_token != bot || upload.to_user_id != to_user {
        return Err(Reject::ilink_invalid(format!(
            "{field}.media names an upload made for {:?}, not for {to_user:?} (uploads are per recipient)",
            upload.to_user_id
        )));
    }
    let key = media.get("aes_key").and_then(Value::as_str).and_then(wire_key);
    if key.as_deref() != Some(upload.aeskey.as_str()) {
        return Err(Reject::ilink_invalid(format!(
            "{field}.media.aes_key must be base64 of the upload's key (its 32 hex digits as text), got {}",
            if media.get("aes_key").is_some() { "another value" } else { "nothing" }
        )));
    }
    if let Some(kind) = media.get("encrypt_type").filter(|t| !matches!(t.as_u64(), Some(0 | 1))) {
        return Err(Reject::ilink_invalid(format!("{field}.media.encrypt_type must be 0 or 1, got {kind}")));
    }
    let sealed = sealed_size(upload.rawsize);
    let mut file_name = None;
    match item_type {
        2 | 5 => {
            let size_field = if item_type == 2 { "mid_size" } else { "video_size" };
            if body.get(size_field).and_then(Value::as_u64) != Some(sealed) {
                return Err(Reject::ilink_invalid(format!(
                    "{field}.{size_field} must be the ciphertext size, {sealed}, got {}",
                    show(body.get(size_field))
                )));
            }
        }
        4 => {
            match body.get("file_name") {
                Some(Value::String(n)) if !n.is_empty() => file_name = Some(n.clone()),
                other => {
                    return Err(Reject::ilink_invalid(format!(
                        "file_item.file_name must be a non-empty string, got {}",
                        show(other)
                    )))
                }
            }
            let raw = upload.rawsize.to_string();
            if body.get("len").and_then(Value::as_str) != Some(raw.as_str()) {
                return Err(Reject::ilink_invalid(format!(
                    "file_item.len must be the file's size as a decimal string, \"{raw}\", got {}",
                    show(body.get("len"))
                )));
            }
        }
        _ => st.problems.push(format!(
            "{} {}: a voice item (type 3) is accepted but never shown on the phone; send audio as a file",
            req.method, req.path
        )),
    }
    if upload.media_type != upload_type {
        let noted = format!(
            "{} {}: {field} names an upload reserved as media_type {}, not {upload_type}",
            req.method, req.path, upload.media_type
        );
        st.problems.push(noted);
    }
    Ok(IlinkMediaSend {
        bot_token: bot.to_owned(),
        to_user_id: to_user.to_owned(),
        item_type: item_type as u8,
        file_name,
        encrypt_query_param: param,
        bytes: upload.bytes.clone().unwrap_or_default(),
    })
}

/// The key a media item's `aes_key` carries, as lowercase hex: base64 of the 32 hex digits (what
/// clients send) or of the 16 raw bytes (what the service sends for some inbound images).
fn wire_key(text: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    match raw.len() {
        32 => std::str::from_utf8(&raw).ok().filter(|h| is_hex32(h)).map(str::to_ascii_lowercase),
        16 => Some(raw.iter().map(|b| format!("{b:02x}")).collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_decode_in_both_forms() {
        let hex = "00112233445566778899aabbccddeeff";
        assert_eq!(wire_key("MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=").as_deref(), Some(hex));
        assert_eq!(wire_key("ABEiM0RVZneImaq7zN3u/w==").as_deref(), Some(hex));
        assert_eq!(wire_key(hex), None, "bare hex is not base64 of anything of the right size");
        assert_eq!(hex16(hex).map(|k| k[15]), Some(0xff));
    }
}
