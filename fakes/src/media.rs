//! Inbound media downloads, served the way the real hosts serve them (media.md §1.2, §3.2, §4.2;
//! wecom-aibot.md §7):
//!
//! * `GET /cgi-bin/media/get?access_token=&media_id=`: WeCom and the Official Account share the
//!   path; the token says which platform asks, and a media_id serves only its own corp or account.
//!   WeCom honours one `Range` and refuses a whole file over the per-GET limit (830002); the OA
//!   ignores `Range` and answers a video with `{"video_url"}`, which points at `GET /oa/video?id=`.
//! * `GET /aibot/media?id=`: an AI bot's media URL on Tencent Cloud COS: AES-256-CBC ciphertext,
//!   valid 5 minutes.
//! * `GET /c2c/download?encrypted_query_param=`: the iLink CDN: AES-128-ECB ciphertext, or a plain
//!   image.
//!
//! The same store holds what clients upload (`media/upload`, `webhook/upload_media`; upload.rs):
//! every media_id lives 3 days (or until `FakeWechat::expire_media`), belongs to one corp, Official
//! Account or robot key, and has a type (`image`/`voice`/`video`/`file`) that sends check.
//!
//! Files are kept as `Bytes`, so an answer (or a range of one) shares them instead of copying.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use rand::RngExt as _;
use serde_json::json;

use crate::media_store::*;
use crate::state::{Owner, State};
use crate::wire::{cos_error, cos_reject, random_alnum, random_string, wechat_json, Family, Reject, Req};

/// Stores a temporary media for 3 days; returns its new media_id. An OA media whose mime is
/// `video/…` also gets a `/oa/video` URL.
pub(crate) fn add(st: &mut State, mut media: Media) -> String {
    media.expires_at = Instant::now().checked_add(MEDIA_TTL);
    let media_id = match media.platform {
        // Shaped like media/upload's ids.
        Platform::Wecom | Platform::Robot => format!("3{}", random_alnum(40)),
        Platform::Oa => random_string(64),
    };
    let is_video = media.mime.as_bytes().get(..6).is_some_and(|m| m.eq_ignore_ascii_case(b"video/"));
    if media.platform == Platform::Oa && is_video {
        let video_id = random_alnum(32);
        st.media.videos.insert(video_id.clone(), (media.mime.clone(), media.bytes.clone()));
        st.media.video_ids.insert(media_id.clone(), video_id);
    }
    st.media.files.insert(media_id.clone(), media);
    media_id
}

/// The file name and bytes stored under `media_id` (expired or not), or uploaded to the iLink
/// CDN under that `x-encrypted-param` (named as its last file item named it, else by its type).
pub(crate) fn lookup(st: &State, media_id: &str) -> Option<(String, Vec<u8>)> {
    if let Some(media) = st.media.files.get(media_id) {
        return Some((media.filename.clone(), media.bytes.to_vec()));
    }
    let ilink = &st.media.ilink;
    let upload = ilink.uploads.iter().find(|u| u.encrypt_query_param.as_deref() == Some(media_id))?;
    let named = ilink.sends.iter().rev().find(|s| s.encrypt_query_param == media_id).and_then(|s| s.file_name.clone());
    let kind = match upload.media_type {
        1 => "image",
        2 => "video",
        _ => "file",
    };
    Some((named.unwrap_or_else(|| kind.to_owned()), upload.bytes.clone()?))
}

/// Makes `media_id` (or, with `None`, every media_id) answer 40007 from now on.
pub(crate) fn expire(st: &mut State, media_id: Option<&str>) {
    for (id, media) in &mut st.media.files {
        if media_id.is_none_or(|m| m == id) {
            media.expired = true;
        }
    }
}

/// The media `media_id` names if `platform`'s `account` may use it now; else why not.
fn usable<'a>(st: &'a State, platform: Platform, account: &str, media_id: &str) -> Result<&'a Media, String> {
    let media = st.media.files.get(media_id).ok_or_else(|| format!("media_id {media_id:?} was never issued"))?;
    if media.platform != platform || media.account != account {
        return Err(format!(
            "media_id {media_id:?} belongs to {}, not to {}",
            owner(media.platform, &media.account),
            owner(platform, account)
        ));
    }
    if media.is_expired() {
        return Err(format!("media_id {media_id:?} has expired (media_ids live 3 days)"));
    }
    Ok(media)
}

/// A send's `<at>` = `media_id`: `account`'s own, live, and of type `wanted` (any type when
/// `None`, as a `file` message takes); 40007 otherwise.
pub(crate) fn check_sendable(
    st: &State,
    platform: Platform,
    account: &str,
    at: &str,
    media_id: &str,
    wanted: Option<&str>,
) -> Result<(), Reject> {
    let media =
        usable(st, platform, account, media_id).map_err(|detail| Reject::code(40007, format!("{at}: {detail}")))?;
    match wanted {
        Some(wanted) if media.kind != wanted => Err(Reject::code(
            40007,
            format!("{at}: media_id {media_id:?} has type {}, this message needs type {wanted}", media.kind),
        )),
        _ => Ok(()),
    }
}

/// Stores an AI bot media for the current TTL; returns its URL.
pub(crate) fn add_aibot(st: &mut State, mut media: AibotMedia) -> String {
    media.expires_at = Instant::now().checked_add(st.media.aibot_ttl);
    let id = random_alnum(32);
    st.media.aibot.insert(id.clone(), media);
    format!("{}/aibot/media?id={id}", st.base_url)
}

/// Stores bytes on the iLink CDN; returns their `encrypt_query_param`: base64 with a `+`, a `/`
/// and `=` padding, so only a client that percent-encodes it gets the file back.
pub(crate) fn add_cdn(st: &mut State, bytes: Vec<u8>) -> String {
    let param = cdn_param();
    st.media.cdn.insert(param.clone(), Bytes::from(bytes));
    param
}

/// A fresh CDN parameter: base64 with a `+`, a `/` and `=` padding, so only a client that
/// percent-encodes it where it goes in a URL gets through.
pub(crate) fn cdn_param() -> String {
    let mut rng = rand::rng();
    let raw: Vec<u8> = (0..100).map(|_| rng.random_range(0..=u8::MAX)).collect();
    let mut param = base64::engine::general_purpose::STANDARD.encode(raw);
    param.replace_range(10..11, "+");
    param.replace_range(20..21, "/");
    param
}

/// `GET /cgi-bin/media/get?access_token=&media_id=`: an OA token gets the OA's answers (and its
/// error style), anything else WeCom's.
pub(crate) fn media_get(st: &mut State, req: &Req) -> Result<Response, Reject> {
    let owner = req.query("access_token").and_then(|t| st.tokens.get(t)).map(|t| &t.owner);
    if matches!(owner, Some(Owner::Oa { .. })) {
        oa_get(st, req).map_err(|reject| reject.in_family(Family::Oa))
    } else {
        wecom_get(st, req)
    }
}

/// WeCom: the whole file, or the one range asked for (206); a whole file over the limit is 830002.
fn wecom_get(st: &State, req: &Req) -> Result<Response, Reject> {
    req.require_get()?;
    let (corp_id, _) = st.wecom_caller(req.query("access_token"))?;
    let media = find(st, req, Platform::Wecom, &corp_id)?;
    let total = media.bytes.len();
    let Some(range) = req.headers.get(header::RANGE) else {
        let limit = st.media.wecom_get_limit;
        if total > limit {
            return Err(Reject::code(
                830002,
                format!("the file is {total} bytes, over the {limit} a GET without Range may take"),
            ));
        }
        let mut response = file_response(media, StatusCode::OK, media.bytes.clone());
        response.headers_mut().insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        return Ok(response);
    };
    let (first, last) = byte_range(range, total).map_err(|detail| {
        Reject::http(StatusCode::RANGE_NOT_SATISFIABLE, detail)
            .with_header(header::CONTENT_RANGE, ascii_value(format!("bytes */{total}")))
    })?;
    let mut response = file_response(media, StatusCode::PARTIAL_CONTENT, media.bytes.slice(first..=last));
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CONTENT_RANGE, ascii_value(format!("bytes {first}-{last}/{total}")));
    Ok(response)
}

/// The OA: the whole file whatever `Range` says; a video as `{"video_url"}`.
fn oa_get(st: &State, req: &Req) -> Result<Response, Reject> {
    req.require_get()?;
    let app_id = st.oa_caller(req.query("access_token"))?;
    let media = find(st, req, Platform::Oa, &app_id)?;
    if let Some(video_id) = req.query("media_id").and_then(|m| st.media.video_ids.get(m)) {
        return Ok(wechat_json(&json!({"video_url": format!("{}/oa/video?id={video_id}", st.base_url)})));
    }
    Ok(file_response(media, StatusCode::OK, media.bytes.clone()))
}

/// The caller's media named by `media_id`. An unknown one, another corp's or account's (or a
/// robot's), or an expired one is 40007 labelled `text/plain` (the real OA has been seen doing so, media.md §3.2; the fake does it
/// on both platforms so a client cannot rely on `application/json` to spot errors).
fn find<'a>(st: &'a State, req: &Req, platform: Platform, account: &str) -> Result<&'a Media, Reject> {
    let media_id = req
        .query("media_id")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Reject::code(41006, "no media_id in the query string"))?;
    usable(st, platform, account, media_id).map_err(|detail| {
        Reject::code(40007, detail).with_header(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))
    })
}

/// `GET /oa/video?id=`: the video behind an OA `video_url`; no token.
pub(crate) fn oa_video(st: &mut State, req: &Req) -> Result<Response, Reject> {
    require_download_get(req)?;
    let id = req.query("id").unwrap_or_default();
    let (mime, bytes) =
        st.media.videos.get(id).ok_or_else(|| {
            Reject::page(StatusCode::NOT_FOUND, None, "", format!("video id {id:?} was never issued"))
        })?;
    Ok(bytes_response(StatusCode::OK, mime.clone(), bytes.clone()))
}

/// `GET /aibot/media?id=`: the ciphertext while the URL lives; COS's 403 `AccessDenied` after
/// (expected, so counted but not a problem).
pub(crate) fn aibot_media(st: &mut State, req: &Req) -> Result<Response, Reject> {
    if req.method != Method::GET {
        return Err(cos_reject(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
            format!("{} on an AI bot media URL (GET only)", req.method),
        ));
    }
    let id = req.query("id").unwrap_or_default();
    let Some(media) = st.media.aibot.get(id) else {
        return Err(cos_reject(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            format!("AI bot media id {id:?} was never issued"),
        ));
    };
    if media.expires_at.is_some_and(|at| Instant::now() >= at) {
        st.media.aibot_expired_hits += 1;
        return Ok(cos_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired"));
    }
    let mut response = bytes_response(StatusCode::OK, OCTET_STREAM, media.ciphertext.clone());
    if let Some(disposition) = &media.disposition {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, disposition.clone());
    }
    Ok(response)
}

/// `GET /c2c/download?encrypted_query_param=`: the stored bytes; an unknown parameter is a 404
/// with an empty body.
pub(crate) fn cdn_download(st: &mut State, req: &Req) -> Result<Response, Reject> {
    require_download_get(req)?;
    let Some(param) = req.query("encrypted_query_param") else {
        return Err(Reject::page(
            StatusCode::NOT_FOUND,
            None,
            "",
            "no encrypted_query_param in the query string (the item's field is encrypt_query_param, \
             the URL's parameter encrypted_query_param)",
        ));
    };
    if let Some(bytes) = st.media.cdn.get(param) {
        return Ok(bytes_response(StatusCode::OK, OCTET_STREAM, bytes.clone()));
    }
    let detail = if param.contains(' ') && st.media.cdn.contains_key(&param.replace(' ', "+")) {
        "encrypted_query_param arrived with spaces for its '+': it was not percent-encoded".to_owned()
    } else {
        format!("encrypted_query_param {param:?} was never issued")
    };
    Err(Reject::page(StatusCode::NOT_FOUND, None, "", detail))
}

fn require_download_get(req: &Req) -> Result<(), Reject> {
    if req.method == Method::GET {
        Ok(())
    } else {
        Err(Reject::page(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "",
            format!("{} on a download URL (GET only)", req.method),
        ))
    }
}

/// The one range a `Range: bytes=a-b` (or `a-`, or `-n` for the last n bytes) header asks for,
/// as inclusive offsets clamped to the file; the reason for a 416 otherwise (a malformed header, or
/// one that starts past the end).
fn byte_range(header: &HeaderValue, total: usize) -> Result<(usize, usize), String> {
    let text = header.to_str().map_err(|_| "Range header is not visible ASCII".to_owned())?;
    let malformed = || format!("Range {text:?} is not \"bytes=first-last\", \"bytes=first-\" or \"bytes=-suffix\"");
    let spec = text.trim().strip_prefix("bytes=").ok_or_else(malformed)?;
    if spec.contains(',') {
        return Err(format!("Range {text:?} asks for several ranges; this fake serves one"));
    }
    let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Result<usize, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        // A number too large for usize is past any end.
        Ok(s.parse().unwrap_or(usize::MAX))
    };
    let unsatisfiable = || format!("Range {text:?} starts past the end of the {total}-byte file");
    if first.is_empty() {
        let suffix = number(last)?;
        if suffix == 0 || total == 0 {
            return Err(unsatisfiable());
        }
        return Ok((total - suffix.min(total), total - 1));
    }
    let start = number(first)?;
    let end = if last.is_empty() { usize::MAX } else { number(last)? };
    if end < start {
        return Err(format!("Range {text:?} ends before it starts"));
    }
    if start >= total {
        return Err(unsatisfiable());
    }
    Ok((start, end.min(total - 1)))
}

/// A media/get success: the media's type and file name with `body`.
fn file_response(media: &Media, status: StatusCode, body: Bytes) -> Response {
    let mut response = bytes_response(status, media.mime.clone(), body);
    response.headers_mut().insert(header::CONTENT_DISPOSITION, media.disposition.clone());
    response
}

fn bytes_response(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response {
    let len = body.len();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// A header value from text the fake wrote itself (always visible ASCII).
fn ascii_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(text: &str, total: usize) -> Result<(usize, usize), String> {
        byte_range(&HeaderValue::from_str(text).unwrap(), total)
    }

    #[test]
    fn ranges_are_clamped_to_the_file() {
        assert_eq!(range("bytes=0-9", 100), Ok((0, 9)));
        assert_eq!(range("bytes=90-", 100), Ok((90, 99)));
        assert_eq!(range("bytes=90-1000", 100), Ok((90, 99)));
        assert_eq!(range("bytes=-10", 100), Ok((90, 99)));
        assert_eq!(range("bytes=-1000", 100), Ok((0, 99)));
        assert_eq!(range("bytes=99-99", 100), Ok((99, 99)));
        assert_eq!(range("bytes=0-99999999999999999999999", 100), Ok((0, 99)));
    }

    #[test]
    fn bad_or_unsatisfiable_ranges_are_refused() {
        for bad in
            ["bytes=100-", "bytes=5-4", "items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=a-b", "bytes=", "bytes=-"]
        {
            assert!(range(bad, 100).is_err(), "{bad}");
        }
        assert!(range("bytes=0-", 0).is_err());
        assert!(range("bytes=-1", 0).is_err());
    }

    #[test]
    fn padding_is_one_to_a_whole_block() {
        assert_eq!(pkcs7(&[0; 40], 32).len(), 64);
        assert_eq!(pkcs7(&[0; 64], 32)[64..], [32; 32]);
        assert_eq!(pkcs7(&[], 16), [16; 16]);
        assert_eq!(pkcs7(&[7; 15], 16)[15], 1);
    }

    #[test]
    fn rfc5987_encodes_everything_but_attr_chars() {
        assert_eq!(rfc5987("图 a.png"), "%E5%9B%BE%20a.png");
        assert_eq!(rfc5987("a\"b;c"), "a%22b%3Bc");
    }
}
