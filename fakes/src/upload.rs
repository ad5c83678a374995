//! Outbound media uploads, checked as media.md §1.3 and §2 describe, and kept in the media store
//! (media.rs) under the media_id they answer:
//!
//! * `POST /cgi-bin/media/upload?access_token=&type=image|voice|video|file` (WeCom app): the
//!   media_id belongs to the token's corp (every app of it may send it or fetch it with
//!   `media/get`).
//! * `POST /cgi-bin/webhook/upload_media?key=&type=file|voice` (group robot): the media_id is usable
//!   only by that key's `webhook/send`.
//! * `POST /cgi-bin/media/upload?access_token=&type=image|voice|video|thumb` with an Official
//!   Account token (§3.3): the account's temporary media (image ≤ 2 MB JPG/PNG/GIF, voice AMR or
//!   MP3, video MP4, thumb ≤ 64 KB JPG; no `file`), answered without errcode, `created_at` a
//!   number.
//!
//! The body is `multipart/form-data` with one part named `media` carrying a raw
//! `filename="…"` (UTF-8 bytes, as reqwest's `percent_encode_noop` sends it). WeCom does not read
//! RFC 2231 `filename*=`: a part named only that way is "empty media data" (44001). Every file is
//! more than 5 bytes (40006) and at most its type's cap (45001); an image must be JPG/PNG, a voice
//! AMR (`#!AMR`), a video MP4 (`ftyp` box), else 40004; an unknown `type` is 40005.

use axum::response::Response;
use serde_json::json;

use crate::media;
use crate::media_store::{Media, Platform};
use crate::state::State;
use crate::wire::{unix_secs, wechat_json, Reject, Req};

const MB: usize = 1 << 20;

/// `(type, largest file)` of a WeCom app upload (media.md §1.3).
pub(crate) const WECOM_TYPES: &[(&str, usize)] =
    &[("image", 10 * MB), ("voice", 2 * MB), ("video", 10 * MB), ("file", 20 * MB)];

/// `(type, largest file)` of a group robot upload (media.md §2).
pub(crate) const ROBOT_TYPES: &[(&str, usize)] = &[("file", 20 * MB), ("voice", 2 * MB)];

/// `(type, largest file)` of an Official Account temporary media upload (media.md §3.3: images
/// kept to 2 MB, the figure the page's notes and WxJava give; no `file` type).
pub(crate) const OA_TYPES: &[(&str, usize)] =
    &[("image", 2 * MB), ("voice", 2 * MB), ("video", 10 * MB), ("thumb", 64 * 1024)];

/// Files of at most this many bytes are refused (every platform: "> 5 bytes").
const MIN_EXCLUSIVE: usize = 5;

/// Checks an upload's `type` and `media` part, stores the file for `platform`'s `account` and
/// answers `{"errcode":0,"type","media_id","created_at"}` (`created_at` a string, as WeCom's doc shows).
pub(crate) fn store(
    st: &mut State,
    req: &Req,
    platform: Platform,
    account: &str,
    types: &[(&'static str, usize)],
) -> Result<Response, Reject> {
    let asked = req.query("type").unwrap_or_default();
    let Some(&(kind, cap)) = types.iter().find(|(t, _)| *t == asked) else {
        let known: Vec<&str> = types.iter().map(|(t, _)| *t).collect();
        return Err(Reject::code(40005, format!("type {asked:?} is not one of {known:?}")));
    };
    let part = media_part(req)?;
    let len = part.data.len();
    if len <= MIN_EXCLUSIVE {
        return Err(Reject::code(40006, format!("the file is {len} bytes; WeCom takes more than {MIN_EXCLUSIVE}")));
    }
    if len > cap {
        return Err(Reject::code(45001, format!("the {kind} is {len} bytes, over its cap of {cap}")));
    }
    check_format(platform, kind, &part.data)?;
    for note in &part.notes {
        st.problems.push(format!("{} {}: {note}", req.method, req.path));
    }
    let media = Media::uploaded(platform, account, kind, part.filename, part.content_type.as_deref(), part.data);
    let media_id = media::add(st, media);
    if platform == Platform::Oa {
        // The Official Account answers without errcode, `created_at` a number (media.md §3.3).
        return Ok(wechat_json(&json!({"type": kind, "media_id": media_id, "created_at": unix_secs()})));
    }
    Ok(wechat_json(&json!({
        "errcode": 0, "errmsg": "ok", "type": kind, "media_id": media_id, "created_at": unix_secs().to_string()
    })))
}

/// The formats each type takes, by magic bytes (media.md §1.3: JPG/PNG, AMR, MP4; §3.3: the
/// Official Account also takes GIF images and MP3 voice, and a JPG thumb).
fn check_format(platform: Platform, kind: &str, data: &[u8]) -> Result<(), Reject> {
    let jpg_png = data.starts_with(&[0xFF, 0xD8, 0xFF]) || data.starts_with(b"\x89PNG\r\n\x1a\n");
    let oa = platform == Platform::Oa;
    let (fits, wanted) = match kind {
        "image" if oa => (jpg_png || data.starts_with(b"GIF8"), "JPG, PNG or GIF"),
        "image" => (jpg_png, "JPG or PNG"),
        "thumb" => (data.starts_with(&[0xFF, 0xD8, 0xFF]), "JPG"),
        "voice" if oa => {
            (data.starts_with(b"#!AMR") || data.starts_with(b"ID3") || data.starts_with(&[0xFF, 0xFB]), "AMR or MP3")
        }
        "voice" => (data.starts_with(b"#!AMR"), "AMR (starting #!AMR)"),
        "video" => (data.get(4..8) == Some(b"ftyp"), "MP4 (an ftyp box first)"),
        _ => (true, ""),
    };
    if fits {
        Ok(())
    } else {
        Err(Reject::code(40004, format!("a {kind} upload must be {wanted}; these bytes are not")))
    }
}

/// The part named `media` of a multipart/form-data body.
#[derive(Debug)]
pub(crate) struct MediaPart {
    /// The raw bytes of `filename="…"` (quoted-pairs undone), as UTF-8.
    pub filename: String,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
    /// Slips the fake lets through but reports (a file name that is not UTF-8).
    pub notes: Vec<String>,
}

/// Finds and reads the part named `media`. No multipart body, no such part or a part cut short is
/// 41005 (media data missing); a part without a `filename` is 41005 too, unless it names the file
/// only as RFC 2231 `filename*=`, which WeCom answers with 44001 (empty media data).
pub(crate) fn media_part(req: &Req) -> Result<MediaPart, Reject> {
    let content_type = req.header("content-type").unwrap_or_default();
    let is_form =
        content_type.split(';').next().is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"));
    let boundary = params(content_type.as_bytes())
        .into_iter()
        .find(|(name, _)| name == "boundary")
        .map(|(_, value)| value)
        .filter(|b| is_form && !b.is_empty())
        .ok_or_else(|| {
            Reject::code(
                41005,
                format!("the body is not multipart/form-data with a boundary (Content-Type {content_type:?})"),
            )
        })?;
    let body = &req.body[..];
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(&boundary);
    let mut next_delimiter = b"\r\n".to_vec();
    next_delimiter.extend_from_slice(&delimiter);

    let missing = |detail: &str| Reject::code(41005, format!("media data missing: {detail}"));
    let first = if body.starts_with(&delimiter) { Some(0) } else { find(body, &next_delimiter, 0).map(|p| p + 2) };
    let mut at = first.ok_or_else(|| missing("the body holds no boundary delimiter"))?;
    loop {
        let after = at + delimiter.len();
        if body.get(after..after + 2) == Some(b"--") {
            return Err(missing("no part named \"media\""));
        }
        // The delimiter line may carry transport padding before its CRLF.
        let start = find(body, b"\r\n", after)
            .map(|p| p + 2)
            .ok_or_else(|| missing("the body ends inside a delimiter line"))?;
        let end = find(body, &next_delimiter, start).ok_or_else(|| missing("a part has no closing boundary"))?;
        let part = &body[start..end];
        let (head, data) = if let Some(data) = part.strip_prefix(b"\r\n") {
            (&part[..0], data)
        } else {
            let split = find(part, b"\r\n\r\n", 0).ok_or_else(|| missing("a part's headers never end"))?;
            (&part[..split], &part[split + 4..])
        };
        if let Some(found) = read_part(head, data)? {
            return Ok(found);
        }
        at = end + 2;
    }
}

/// The part if it is the one named `media`.
fn read_part(head: &[u8], data: &[u8]) -> Result<Option<MediaPart>, Reject> {
    let mut disposition = None;
    let mut content_type = None;
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.trim_ascii().eq_ignore_ascii_case(b"content-disposition") {
            disposition = Some(params(value));
        } else if name.trim_ascii().eq_ignore_ascii_case(b"content-type") {
            content_type = std::str::from_utf8(value.trim_ascii()).ok().map(str::to_owned);
        }
    }
    let Some(params) = disposition else { return Ok(None) };
    let param = |key: &str| params.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_slice());
    if param("name") != Some(b"media") {
        return Ok(None);
    }
    let filename = match (param("filename"), param("filename*")) {
        (Some(raw), _) if !raw.is_empty() => raw,
        (_, Some(_)) => {
            return Err(Reject::code(
                44001,
                "the media part names its file only as RFC 2231 filename*=, which WeCom does not read; \
                 send the raw UTF-8 bytes in filename=\"…\" (reqwest: Form::percent_encode_noop)",
            ))
        }
        _ => return Err(Reject::code(41005, "media data missing: the media part has no filename")),
    };
    let mut notes = Vec::new();
    let filename = match String::from_utf8(filename.to_vec()) {
        Ok(name) => name,
        Err(_) => {
            notes.push(format!(
                "the media part's filename is not UTF-8 ({}); WeCom shows it garbled",
                String::from_utf8_lossy(filename)
            ));
            String::from_utf8_lossy(filename).into_owned()
        }
    };
    Ok(Some(MediaPart { filename, content_type, data: data.to_vec(), notes }))
}

/// The `; name=value` parameters after a header value's first item, names lowercased, values as
/// bytes (a quoted value without its quotes and with its quoted-pairs undone).
fn params(value: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(first) = value.iter().position(|&b| b == b';') else { return out };
    let mut i = first + 1;
    let skip_space = |i: &mut usize| {
        while value.get(*i).is_some_and(|b| *b == b' ' || *b == b'\t') {
            *i += 1;
        }
    };
    while i < value.len() {
        skip_space(&mut i);
        let name_start = i;
        while value.get(i).is_some_and(|b| *b != b'=' && *b != b';') {
            i += 1;
        }
        let name = String::from_utf8_lossy(&value[name_start..i]).trim().to_ascii_lowercase();
        let mut val = Vec::new();
        if value.get(i) == Some(&b'=') {
            i += 1;
            skip_space(&mut i);
            if value.get(i) == Some(&b'"') {
                i += 1;
                while let Some(&b) = value.get(i) {
                    if b == b'"' {
                        break;
                    }
                    if b == b'\\' {
                        if let Some(&escaped) = value.get(i + 1) {
                            val.push(escaped);
                            i += 2;
                            continue;
                        }
                    }
                    val.push(b);
                    i += 1;
                }
                while value.get(i).is_some_and(|b| *b != b';') {
                    i += 1;
                }
            } else {
                let start = i;
                while value.get(i).is_some_and(|b| *b != b';') {
                    i += 1;
                }
                val = value[start..i].trim_ascii_end().to_vec();
            }
        }
        if !name.is_empty() {
            out.push((name, val));
        }
        i += 1;
    }
    out
}

/// The first `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while let Some(offset) = haystack.get(at..)?.iter().position(|&b| b == first) {
        let candidate = at + offset;
        if haystack.get(candidate + 1..candidate + needle.len()) == Some(rest) {
            return Some(candidate);
        }
        at = candidate + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(params: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a [u8]> {
        params.iter().find(|(n, _)| n == key).map(|(_, v)| v.as_slice())
    }

    #[test]
    fn params_read_quoted_raw_and_escaped_values() {
        let p = params(" form-data; name=\"media\";filename=\"报告 \\\"1\\\".pdf\"; filelength=6".as_bytes());
        assert_eq!(get(&p, "name"), Some(&b"media"[..]));
        assert_eq!(get(&p, "filename"), Some("报告 \"1\".pdf".as_bytes()));
        assert_eq!(get(&p, "filelength"), Some(&b"6"[..]));
        let p = params(b"form-data; name=media; filename*=utf-8''%E6%8A%A5.pdf");
        assert_eq!(get(&p, "name"), Some(&b"media"[..]));
        assert_eq!(get(&p, "filename"), None);
        assert_eq!(get(&p, "filename*"), Some(&b"utf-8''%E6%8A%A5.pdf"[..]));
        let p = params(b"multipart/form-data; boundary=\"abc\"");
        assert_eq!(get(&p, "boundary"), Some(&b"abc"[..]));
        // Cut short or odd input never panics.
        for odd in [&b"x; name=\"unterminated"[..], b";", b"; =", b"; a=\"\\", b"x;;;"] {
            let _ = params(odd);
        }
    }

    #[test]
    fn find_scans_from_an_offset() {
        assert_eq!(find(b"abcabc", b"bc", 0), Some(1));
        assert_eq!(find(b"abcabc", b"bc", 2), Some(4));
        assert_eq!(find(b"abcab", b"abc", 1), None);
        assert_eq!(find(b"ab", b"", 0), None);
        assert_eq!(find(b"ab", b"b", 9), None);
    }
}
