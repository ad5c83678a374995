//! Lambda event glue shared by the functions: API Gateway requests for the callbacks, SQS
//! batches for the dispatcher and the sender.

use lambda_http::http::{header::CONTENT_TYPE, HeaderValue, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};

use crate::core::callback::{CallbackRequest, CallbackResponse, CallbackService};

/// The `{app}` of `/…/{app}`: the route's path parameter, else the last path segment.
fn app_of(req: &Request) -> String {
    req.path_parameters_ref()
        .and_then(|params| params.first("app").or_else(|| params.first("bot")))
        .map(str::to_owned)
        .unwrap_or_else(|| req.uri().path().rsplit('/').next().unwrap_or_default().to_owned())
}

/// When API Gateway received the request (`requestContext.timeEpoch`), if it says.
fn received_at(req: &Request) -> Option<std::time::SystemTime> {
    let epoch_ms = match req.request_context_ref()? {
        lambda_http::request::RequestContext::ApiGatewayV2(context) => context.time_epoch,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let ms = u64::try_from(epoch_ms).ok().filter(|ms| *ms > 0)?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// Hands one API Gateway request to `service`. Never fails: every outcome is an HTTP answer.
pub async fn handle_http(service: &dyn CallbackService, req: Request) -> Response<Body> {
    handle_http_counted(service, req, None).await
}

/// The counts a callback's answer adds (what the callback alarms watch): `CallbackFailed` for
/// ours (5xx: a queue or the table unavailable; WeChat retries a few times, then the message is
/// lost), `CallbackKeyRefused` for a signature or decryption that fails (a wrong Token or
/// EncodingAESKey loses every message of the account), `CallbackRefused` for other bad requests.
pub fn callback_counts(answer: &CallbackResponse) -> Option<&'static str> {
    match answer.refused {
        _ if answer.status >= 500 => Some("CallbackFailed"),
        Some(kind) if crate::core::callback::CallbackError::is_key_problem(kind) => Some("CallbackKeyRefused"),
        Some(_) => Some("CallbackRefused"),
        None => None,
    }
}

/// [`handle_http`], counting each refusal and failure in `metrics` (the functions pass their
/// EMF metrics; `wxbridge dev` counts nothing).
pub async fn handle_http_counted(
    service: &dyn CallbackService,
    req: Request,
    metrics: Option<&dyn crate::core::ports::Metrics>,
) -> Response<Body> {
    let app = app_of(&req);
    let request = CallbackRequest {
        method: req.method().as_str(),
        app: &app,
        // API Gateway HTTP API passes rawQueryString through as the URI's query.
        raw_query: req.uri().query().unwrap_or_default(),
        body: req.body().as_ref(),
    };
    let answer = service.serve_received(request, received_at(&req)).await;
    if let (Some(metrics), Some(name)) = (metrics, callback_counts(&answer)) {
        let route = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or_default();
        let status = answer.status.to_string();
        metrics.count(name, &[("route", route), ("status", &status), ("outcome", answer.refused.unwrap_or("failed"))]);
    }
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    response
}

/// The records of an SQS event. A record without an id or receipt cannot be acted on and is
/// skipped (SQS always sets them).
pub fn sqs_records(event: aws_lambda_events::event::sqs::SqsEvent) -> Vec<crate::core::ports::Record> {
    event
        .records
        .into_iter()
        .filter_map(|m| {
            let receive_count = m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
            Some(crate::core::ports::Record {
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body.unwrap_or_default(),
                receive_count,
                group: m.attributes.get("MessageGroupId").cloned(),
            })
        })
        .collect()
}

/// The partial batch response naming the records SQS must deliver again.
pub fn batch_response(failed: Vec<String>) -> aws_lambda_events::event::sqs::SqsBatchResponse {
    let mut response = aws_lambda_events::event::sqs::SqsBatchResponse::default();
    for id in failed {
        response.add_failure(id);
    }
    response
}

#[cfg(test)]
mod callback_count_tests {
    use super::*;

    /// Ours (5xx), a wrong key, other bad requests, and accepted ones, each counted apart.
    #[test]
    fn each_refusal_and_failure_is_counted_by_what_it_means() {
        use crate::core::callback::CallbackError;
        use crate::core::ports::PortError;
        let cases = [
            (CallbackError::Publish(PortError::new("sqs", "down")).response(), Some("CallbackFailed")),
            (CallbackError::Signature.response(), Some("CallbackKeyRefused")),
            (
                CallbackError::Crypto(crate::protocol::crypto::CryptoError::BadPadding).response(),
                Some("CallbackKeyRefused"),
            ),
            (CallbackError::Stale.response(), Some("CallbackRefused")),
            (
                CallbackError::Message(crate::protocol::fields::MessageError::Missing("MsgType")).response(),
                Some("CallbackRefused"),
            ),
            (CallbackError::BodyTooLarge.response(), Some("CallbackRefused")),
            (CallbackResponse::ok("text/plain", String::new()), None),
        ];
        for (answer, want) in cases {
            assert_eq!(callback_counts(&answer), want, "{answer:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_record_keeps_its_message_group_and_receive_count() {
        let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m1", "receiptHandle": "r1", "body": "{}", "md5OfBody": "", "eventSource": "aws:sqs",
             "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:wx-inbound.fifo", "awsRegion": "us-east-1",
             "messageAttributes": {},
             "attributes": {"ApproximateReceiveCount": "2", "MessageGroupId": "wecom:0a1b2c", "MessageDeduplicationId": "d",
                            "SequenceNumber": "1", "SentTimestamp": "1", "SenderId": "x", "ApproximateFirstReceiveTimestamp": "1"}},
            {"messageId": "m2", "receiptHandle": "r2", "body": "{}", "attributes": {}, "messageAttributes": {}}
        ]}))
        .unwrap();
        let records = sqs_records(event);
        assert_eq!((records[0].group.as_deref(), records[0].receive_count), (Some("wecom:0a1b2c"), 2));
        assert_eq!((records[1].group.as_deref(), records[1].receive_count), (None, 1), "a standard queue's record");
    }
}
