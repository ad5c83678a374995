//! `wxbridge dev`: the bridge on one machine, serving the same routes as API Gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use lambda_http::RequestExt as _;
use shared::config::{Config, Env};
use shared::memory::{MemoryDedupe, MemoryQueue};
use shared::ports::{QueueMessage, SystemClock};
use shared::wecom::callback::MAX_BODY_BYTES;
use shared::wecom::WecomCallback;
use tokio::sync::mpsc::UnboundedReceiver;

/// Options of `wxbridge dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Address to serve the callback routes on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Use DynamoDB and SQS from the standard AWS environment (WXBRIDGE_TABLE,
    /// WXBRIDGE_INBOUND_QUEUE_URL, AWS_ENDPOINT_URL for an emulator) instead of memory.
    #[arg(long)]
    pub aws: bool,
    /// Config file (default: $WXBRIDGE_CONFIG, else the built-in demo app).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

struct DevState {
    wecom: WecomCallback,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let loaded = crate::settings::load(args.config.clone(), &env)?;
    let config = loaded.config;
    let (wecom, inbound) = if args.aws {
        let sdk = shared::aws::sdk_config().await;
        let env = local_resources(env, &sdk).await?;
        (wecom_callback::build(&config, &env, &sdk)?, None)
    } else {
        let (queue, rx) = MemoryQueue::new();
        let service =
            WecomCallback::new(&config, Arc::new(queue), Arc::new(MemoryDedupe::default()), Arc::new(SystemClock));
        (service, Some(rx))
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    print_banner(&config, &loaded.origin, addr, args.aws);
    if let Some(rx) = inbound {
        tokio::spawn(show_inbound(rx));
    }

    let state = Arc::new(DevState { wecom });
    let router = Router::new().route("/", get(index)).route("/wecom/{app}", any(wecom_route)).with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// On the local emulator with no resource names given, creates `wxbridge-dev-*` resources.
/// Never on real AWS: there the deployed stack's names must be given.
async fn local_resources(mut env: Env, sdk: &shared::aws::SdkConfig) -> anyhow::Result<Env> {
    if env.table.is_some() && env.inbound_queue_url.is_some() {
        return Ok(env);
    }
    if !env.aws_is_local() {
        anyhow::bail!(
            "--aws needs WXBRIDGE_TABLE and WXBRIDGE_INBOUND_QUEUE_URL (a deployed stack's outputs), \
             or AWS_ENDPOINT_URL pointing at the local emulator (scripts/dev --aws starts one)"
        );
    }
    let names = shared::aws::resources::ResourceNames::new("wxbridge-dev");
    let urls =
        shared::aws::resources::create_all(&aws_sdk_dynamodb::Client::new(sdk), &aws_sdk_sqs::Client::new(sdk), &names)
            .await
            .context("cannot create the local table and queues")?;
    println!("local emulator: table {}, inbound queue {}", names.table, urls.inbound);
    env.table = Some(names.table);
    env.inbound_queue_url = Some(urls.inbound);
    Ok(env)
}

fn print_banner(config: &Config, origin: &str, addr: SocketAddr, aws: bool) {
    println!("wxbridge dev listening on http://{addr}");
    println!("  config: {origin}");
    println!("  storage: {}", if aws { "DynamoDB + SQS (AWS environment)" } else { "in memory" });
    for app in &config.wecom {
        println!("  WeCom app {:<12} POST|GET http://{addr}/wecom/{}", app.app, app.app);
    }
    if config.wecom.is_empty() {
        println!("  (no WeCom apps configured)");
    }
    println!("  try: wxbridge simulate wecom --text \"hello\"");
}

/// Prints each published Inbound, as a bot would receive it.
async fn show_inbound(mut rx: UnboundedReceiver<QueueMessage>) {
    while let Some(message) = rx.recv().await {
        let summary = serde_json::from_str::<serde_json::Value>(&message.body)
            .map(|v| {
                let what = v["text"]
                    .as_str()
                    .map(|t| format!("{t:?}"))
                    .or_else(|| v["event"]["name"].as_str().map(|e| format!("event {e}")));
                format!(
                    "{} {} from {}: {}",
                    v["id"].as_str().unwrap_or("?"),
                    v["kind"].as_str().unwrap_or("?"),
                    v["sender"]["id"].as_str().unwrap_or("?"),
                    what.unwrap_or_default()
                )
            })
            .unwrap_or_else(|_| message.body.clone());
        println!("inbound queue ← {summary}");
    }
}

async fn index(State(state): State<Arc<DevState>>) -> impl IntoResponse {
    let _ = &state.wecom;
    "wxbridge dev: POST /wecom/{app}\n"
}

/// Hands the request to the Lambda handler exactly as API Gateway would.
async fn wecom_route(State(state): State<Arc<DevState>>, Path(app): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let lambda_request = lambda_http::http::Request::from_parts(parts, lambda_http::Body::from(bytes.to_vec()))
        .with_path_parameters(HashMap::from([("app".to_owned(), app)]));
    let (parts, body) = wecom_callback::handle(&state.wecom, lambda_request).await.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
}
