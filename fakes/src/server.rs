//! The one HTTP entry point: count the call, apply an injected fault, read the body, route by path,
//! and turn a rejection into the platform's error body plus a `problems()` line.
//!
//! Routing is a plain `match` on the path inside a single fallback handler rather than axum routes
//! with extractors, so that no request can be answered by an axum rejection (a 415 or 422 text the
//! real platforms never send) and every outcome passes through the same bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Query, Request, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;

use crate::state::State;
use crate::types::Fault;
use crate::wire::{dropped_connection, errcode_response, family, http_status_response, Reject, Req};
use crate::{aibot_response, ilink, ilink_login, ilink_upload, kf, media, oa, robot, wecom};

pub(crate) type Shared = Arc<Mutex<State>>;

/// Request bodies above this are refused; the largest legitimate one (a 20 MB file upload plus its
/// multipart framing) is under it, so an upload over a cap gets WeCom's 45001, not a 413.
/// Answers (media downloads) have no such limit.
const MAX_BODY: usize = 24 * 1024 * 1024;

/// Locks the state; a poisoned lock (a panicking test thread) still yields the data.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) async fn dispatch(AxumState(shared): AxumState<Shared>, request: Request) -> Response {
    if lock(&shared).exchanges.is_some() {
        return recorded(&shared, request).await;
    }
    serve(&shared, request).await
}

/// Bodies above this are logged by their size only.
const LOGGED_ANSWER: usize = 64 * 1024;

/// Serves a request and logs it with its answer in [`State::exchanges`].
async fn recorded(shared: &Shared, request: Request) -> Response {
    let started = std::time::Instant::now();
    let at_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default();
    let (parts, body) = request.into_parts();
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let query = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map(|Query(q)| q).unwrap_or_default();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        let reject = Reject::http(StatusCode::PAYLOAD_TOO_LARGE, format!("body unreadable or over {MAX_BODY} bytes"));
        return refuse(&mut lock(shared), &parts.method, &path, reject);
    };
    let request_logged = if bytes.len() <= LOGGED_ANSWER {
        logged_body(&bytes, parts.headers.get(axum::http::header::CONTENT_TYPE))
    } else {
        serde_json::json!(format!("({} bytes)", bytes.len()))
    };
    let response = serve(shared, Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    let (head, body) = response.into_parts();
    let textual = head
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or_default())
        // No type: an empty answer, or a dropped connection (an injected fault).
        .is_none_or(|t| t.contains("json") || t.starts_with("text/"));
    let (response, answer) = if textual {
        // The fake's answers are in memory already: read whole, logged only when short.
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => {
                let answer = if bytes.len() <= LOGGED_ANSWER {
                    logged_body(&bytes, head.headers.get(axum::http::header::CONTENT_TYPE))
                } else {
                    serde_json::json!(format!("({} bytes)", bytes.len()))
                };
                (Response::from_parts(head, axum::body::Body::from(bytes)), answer)
            }
            // A dropped connection (an injected fault).
            Err(_) => (dropped_connection(), serde_json::json!("(connection dropped)")),
        }
    } else {
        (Response::from_parts(head, body), serde_json::json!("(binary)"))
    };
    // Long polls that brought nothing are noise.
    let idle_poll = path == "/ilink/bot/getupdates" && answer["msgs"].as_array().is_none_or(Vec::is_empty);
    if !idle_poll {
        if let Some(log) = lock(shared).exchanges.as_mut() {
            log.push(crate::types::Exchange {
                at_us,
                method,
                path,
                query,
                request: request_logged,
                status: response.status().as_u16(),
                response: answer,
                ms: started.elapsed().as_millis() as u64,
            });
        }
    }
    response
}

/// A body as JSON when it is JSON, as text when it is short text, else by its size.
fn logged_body(bytes: &[u8], content_type: Option<&axum::http::HeaderValue>) -> serde_json::Value {
    if bytes.is_empty() {
        return serde_json::Value::Null;
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return value;
    }
    let textual =
        content_type.and_then(|v| v.to_str().ok()).is_none_or(|t| t.starts_with("text/") || t.contains("xml"));
    match std::str::from_utf8(bytes) {
        Ok(text) if textual && text.len() <= 4096 => serde_json::json!(text),
        _ => serde_json::json!(format!("({} bytes)", bytes.len())),
    }
}

async fn serve(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let fault = {
        let mut st = lock(shared);
        *st.calls.entry(path.clone()).or_default() += 1;
        st.faults.get_mut(&path).and_then(VecDeque::pop_front)
    };
    let mut lose_answer = None;
    match fault {
        Some(Fault::Delay(pause)) => tokio::time::sleep(pause).await,
        Some(Fault::Drop) => return dropped_connection(),
        Some(Fault::HttpStatus(code)) => return http_status_response(&path, code),
        Some(Fault::Errcode(code)) => return errcode_response(family(&path), code, None),
        Some(Fault::LoseAnswer(code)) => lose_answer = Some(code),
        None => {}
    }

    let body = axum::body::to_bytes(body, MAX_BODY).await;
    if path == "/ilink/bot/getupdates" {
        if let (Ok(body), Ok(Query(query))) = (&body, Query::<HashMap<String, String>>::try_from_uri(&parts.uri)) {
            let req = Req {
                method: parts.method.clone(),
                path: path.clone(),
                query: query.clone(),
                headers: parts.headers.clone(),
                body: body.clone(),
            };
            return long_poll(shared, &req).await;
        }
    }
    let mut st = lock(shared);
    let outcome = match body {
        Ok(body) => match Query::<HashMap<String, String>>::try_from_uri(&parts.uri) {
            Ok(Query(query)) => {
                let req = Req { method: parts.method.clone(), path: path.clone(), query, headers: parts.headers, body };
                route(&mut st, &req)
            }
            Err(e) => Err(Reject::http(StatusCode::BAD_REQUEST, format!("unparsable query string: {e}"))),
        },
        Err(e) => {
            Err(Reject::http(StatusCode::PAYLOAD_TOO_LARGE, format!("body unreadable or over {MAX_BODY} bytes: {e}")))
        }
    };
    let answer = outcome.unwrap_or_else(|reject| refuse(&mut st, &parts.method, &path, reject));
    match lose_answer {
        Some(code) => http_status_response(&path, code),
        None => answer,
    }
}

/// Answers a rejection in the platform's shape and reports it in `problems()`.
fn refuse(st: &mut State, method: &axum::http::Method, path: &str, reject: Reject) -> Response {
    let fam = family(path);
    st.problems.push(format!("{method} {path}: {}", reject.describe(fam)));
    reject.into_response(fam)
}

/// Holds an empty `getupdates` until a message is queued or the hold time passes. Two polls in
/// flight on one token are reported: the real service's behaviour then is unknown, so a client
/// must never do it.
async fn long_poll(shared: &Shared, req: &Req) -> Response {
    let opened = {
        let mut st = lock(shared);
        match ilink::getupdates_open(&mut st, req) {
            Ok((token, offset)) => {
                let polling = st.ilink_polling.entry(token.clone()).or_default();
                *polling += 1;
                if *polling > 1 {
                    st.problems
                        .push(format!("{} {}: a second getupdates in flight on one bot token", req.method, req.path));
                }
                Ok((token, offset))
            }
            Err(reject) => Err(refuse(&mut st, &req.method, &req.path, reject)),
        }
    };
    let (token, offset) = match opened {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    // Counts the poll out even when the client hangs up mid-hold (the future is dropped).
    let _in_flight = InFlight { shared: shared.clone(), token: token.clone() };
    let deadline = tokio::time::Instant::now() + lock(shared).ilink_hold;
    loop {
        let give_up = tokio::time::Instant::now() >= deadline;
        if let Some(response) = ilink::getupdates_answer(&mut lock(shared), &token, offset, give_up) {
            return response;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

struct InFlight {
    shared: Shared,
    token: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.shared).ilink_polling.get_mut(&self.token) {
            *n = n.saturating_sub(1);
        }
    }
}

fn route(st: &mut State, req: &Req) -> Result<Response, Reject> {
    match req.path.as_str() {
        "/cgi-bin/gettoken" => wecom::gettoken(st, req),
        "/cgi-bin/message/send" => wecom::message_send(st, req),
        "/cgi-bin/appchat/create" => wecom::appchat_create(st, req),
        "/cgi-bin/appchat/get" => wecom::appchat_get(st, req),
        "/cgi-bin/appchat/send" => wecom::appchat_send(st, req),
        "/cgi-bin/appchat/update" => wecom::appchat_update(st, req),
        "/cgi-bin/media/upload" => wecom::media_upload(st, req),
        "/cgi-bin/media/get" => media::media_get(st, req),
        "/oa/video" => media::oa_video(st, req),
        "/aibot/media" => media::aibot_media(st, req),
        "/c2c/download" => media::cdn_download(st, req),
        "/c2c/upload" => ilink_upload::cdn_upload(st, req),
        "/cgi-bin/webhook/upload_media" => robot::upload_media(st, req),
        "/cgi-bin/webhook/send" => robot::send(st, req),
        "/cgi-bin/aibot/response" => aibot_response::response(st, req),
        "/cgi-bin/kf/sync_msg" => kf::sync_msg(st, req),
        "/cgi-bin/kf/send_msg" => kf::send_msg(st, req),
        "/cgi-bin/kf/send_msg_on_event" => kf::send_msg_on_event(st, req),
        "/cgi-bin/kf/service_state/get" => kf::service_state_get(st, req),
        "/cgi-bin/kf/service_state/trans" => kf::service_state_trans(st, req),
        "/cgi-bin/stable_token" => oa::stable_token(st, req),
        "/cgi-bin/token" => oa::plain_token(st, req),
        "/cgi-bin/message/custom/send" => oa::custom_send(st, req),
        "/cgi-bin/message/custom/typing" => oa::typing(st, req),
        "/ilink/bot/sendmessage" => ilink::sendmessage(st, req),
        "/ilink/bot/getuploadurl" => ilink::getuploadurl(st, req),
        "/ilink/bot/getconfig" => ilink::getconfig(st, req),
        "/ilink/bot/sendtyping" => ilink::sendtyping(st, req),
        "/ilink/bot/get_bot_qrcode" => ilink_login::get_bot_qrcode(st, req),
        "/ilink/bot/get_qrcode_status" => ilink_login::get_qrcode_status(st, req),
        other => Err(Reject::http(StatusCode::NOT_FOUND, format!("{other} is not an endpoint this fake serves"))),
    }
}
