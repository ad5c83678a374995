//! Lambda glue for the WeCom callback: API Gateway HTTP API events in, [`WecomCallback`] answers out.

use std::sync::Arc;

use lambda_http::http::{header::CONTENT_TYPE, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use shared::aws::{DynamoDedupe, SqsPublisher};
use shared::config::{Config, ConfigError, Env};
use shared::ports::SystemClock;
use shared::wecom::{CallbackRequest, WecomCallback};

/// Builds the service on DynamoDB and SQS, as named by the environment.
pub fn build(config: &Config, env: &Env, sdk: &shared::aws::SdkConfig) -> Result<WecomCallback, ConfigError> {
    let publisher = SqsPublisher::from_sdk(sdk, env.require_inbound_queue_url()?);
    let dedupe = DynamoDedupe::from_sdk(sdk, env.require_table()?);
    Ok(WecomCallback::new(config, Arc::new(publisher), Arc::new(dedupe), Arc::new(SystemClock)))
}

/// The `{app}` of `/wecom/{app}`: the route's path parameter, else the last path segment.
fn app_of(req: &Request) -> String {
    req.path_parameters_ref()
        .and_then(|params| params.first("app"))
        .map(str::to_owned)
        .unwrap_or_else(|| req.uri().path().rsplit('/').next().unwrap_or_default().to_owned())
}

/// Handles one API Gateway request. Never fails: every outcome is an HTTP answer.
pub async fn handle(service: &WecomCallback, req: Request) -> Response<Body> {
    let app = app_of(&req);
    let answer = service
        .handle(CallbackRequest {
            method: req.method().as_str(),
            app: &app,
            // API Gateway HTTP API passes rawQueryString through as the URI's query.
            raw_query: req.uri().query().unwrap_or_default(),
            body: req.body().as_ref(),
        })
        .await;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, lambda_http::http::HeaderValue::from_static(answer.content_type));
    response
}
