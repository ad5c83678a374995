//! `wxbridge dev`: the bridge on one machine, serving the same routes as API Gateway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use lambda_http::RequestExt as _;
use shared::adapters::folder::FolderMediaStore;
use shared::adapters::memory::{
    MemoryContextTokens, MemoryDedupe, MemoryLeases, MemoryParkedReplies, MemoryPollState, MemoryQueue,
    MemoryReplySlots, MemoryStreams,
};
use shared::channels::{callback_services, CallbackPorts, Config};
use shared::core::callback::InboundQueues;
use shared::core::callback::{CallbackService, MAX_BODY_BYTES};
use shared::core::config::Env;
use shared::core::envelope::Outbound;
use shared::core::ports::Record;
use shared::core::ports::{QueueMessage, SystemClock};
use shared::services::dispatcher::Dispatcher;
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// Pollers of the inbound queue with `--aws`: conversations answered at once.
const DISPATCH_POLLERS: usize = 4;

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
    /// Config file (default: $WXBRIDGE_CONFIG, else the built-in demo apps in the sandbox).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Send to the built-in WeChat sandbox instead of WeChat, even with a config file (always on
    /// with the built-in demo apps, whose credentials are made up).
    #[arg(long)]
    pub sandbox: bool,
}

struct DevState {
    /// Each callback service by the first segment of its route.
    callbacks: HashMap<&'static str, Arc<dyn CallbackService>>,
    outbound: OutboundSink,
    sandbox: Option<Arc<fakes::FakeWechat>>,
    config: Arc<Config>,
}

/// Where `POST /outbound` puts a message: the in-memory queue or the SQS outbound queue.
enum OutboundSink {
    Memory(mpsc::UnboundedSender<Record>),
    Sqs { client: aws_sdk_sqs::Client, queue_url: String },
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut env = Env::from_process();
    let loaded = crate::settings::load(args.config.clone(), &env)?;
    let mut config = loaded.config;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    crate::feed::install();
    let sandbox = if args.sandbox || loaded.demo {
        let fake = crate::sandbox::start(&mut config, &mut env).await;
        Some(fake)
    } else {
        None
    };
    let shared_config = Arc::new(config.clone());
    let banner_env = env.clone();
    let mut media_folder = None;
    let (callbacks, inbound, outbound) = if args.aws {
        let sdk = shared::adapters::aws::sdk_config().await;
        let env = local_resources(env, &sdk, sandbox.is_some()).await?;
        let mut sender = sender::build(config.clone(), &env, &sdk)?;
        sender.metrics = crate::outbound::print_metrics();
        let traced_queue = Arc::new(crate::trace::TracedQueue::new(sender.queue.clone()));
        sender.queue = traced_queue.clone();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let outbound_url = env.require_outbound_queue_url()?.to_owned();
        let inbound_url = env.require_inbound_queue_url()?.to_owned();
        let mut dispatcher = dispatcher::build(&config, &env, &sdk)?;
        dispatcher.bot = Arc::new(crate::trace::TracedBot(dispatcher.bot.clone()));
        let media = media::build(&config, &env, &sdk)?;
        let media = crate::trace::Traced { inner: Arc::new(media), role: crate::trace::Role::Media, queue: None };
        tokio::spawn(crate::sqs::run_sqs(Arc::new(media), sqs.clone(), env.require_media_queue_url()?.to_owned()));
        if !config.ilink.is_empty() {
            let poller = ilink_poller::build(&env, &sdk)?;
            tokio::spawn(crate::ilink::poll_forever(Arc::new(poller), config.ilink.clone()));
        }
        let sender = crate::trace::Traced {
            inner: Arc::new(sender),
            role: crate::trace::Role::Sender,
            queue: Some(traced_queue),
        };
        tokio::spawn(crate::sqs::run_sqs(Arc::new(sender), sqs.clone(), outbound_url.clone()));
        // Several pollers, as Lambda runs several invocations: a slow answer holds up only its
        // own conversation (the FIFO queue hands out no other message of its group meanwhile).
        let dispatcher: Arc<dyn crate::sqs::BatchHandler> = Arc::new(crate::trace::Traced {
            inner: Arc::new(dispatcher),
            role: crate::trace::Role::Dispatcher,
            queue: None,
        });
        for _ in 0..DISPATCH_POLLERS {
            tokio::spawn(crate::sqs::run_sqs(dispatcher.clone(), sqs.clone(), inbound_url.clone()));
        }
        if let (false, Some(kf_url)) = (config.kf.is_empty(), env.kf_queue_url.clone()) {
            let puller = kf_puller::build(&config, &env, &sdk)?;
            tokio::spawn(crate::sqs::run_sqs(Arc::new(puller), sqs.clone(), kf_url));
        }
        let table = shared::adapters::aws::Table::from_sdk(&sdk, env.require_table()?);
        let ports = CallbackPorts {
            publisher: Arc::new(shared::adapters::aws::inbound_queues(&sdk, &env)?),
            slots: Arc::new(shared::adapters::aws::DynamoReplySlots::new(&table)),
            parked: Arc::new(shared::adapters::aws::DynamoParkedReplies::new(&table)),
            streams: Arc::new(shared::adapters::aws::DynamoStreams::new(&table)),
            clock: Arc::new(SystemClock),
            media: dispatcher::media_store(&env, &sdk),
            metrics: Arc::new(crate::outbound::PrintMetrics),
        };
        (callback_services(&config, ports), None, OutboundSink::Sqs { client: sqs, queue_url: outbound_url })
    } else {
        // The FIFO queues' twins: WeChat's retries of a callback are dropped by deduplication id.
        let (queue, rx) = MemoryQueue::fifo();
        let queue = Arc::new(queue);
        let folder = std::env::temp_dir().join("wxbridge-dev-media");
        let store = FolderMediaStore::new(&folder, &format!("http://{addr}"))
            .with_context(|| format!("cannot create the media folder {}", folder.display()))?;
        media_folder = Some(store.clone());
        let media_store: Arc<dyn shared::core::ports::MediaStore> = Arc::new(store.clone());
        let (media_queue, media_rx) = MemoryQueue::fifo();
        let media = crate::media::memory_media(&config, &env, media_store.clone(), queue.clone())?;
        tokio::spawn(crate::media::run_memory(Arc::new(media), media_rx));
        // 微信客服: callbacks queue pulls; the puller opens the reply windows the sender checks.
        let windows: Arc<dyn shared::core::ports::CustomerWindows> =
            Arc::new(shared::adapters::memory::MemoryCustomerWindows::default());
        let kf = if config.kf.is_empty() {
            None
        } else {
            let (kf_queue, kf_rx) = MemoryQueue::fifo();
            // The pull queue too: a backlog longer than one run goes on in a follow-on pull.
            let inbound = Arc::new(InboundQueues {
                inbound: queue.clone(),
                media: Some(Arc::new(media_queue.clone())),
                kf: Some(Arc::new(kf_queue.clone())),
            });
            let puller = crate::kf::memory_puller(&config, &env, inbound, windows.clone())?;
            tokio::spawn(crate::kf::run_memory(Arc::new(puller), kf_rx));
            Some(Arc::new(kf_queue) as Arc<dyn shared::core::ports::Publisher>)
        };
        let queue = Arc::new(InboundQueues { inbound: queue, media: Some(Arc::new(media_queue)), kf });
        let slots = Arc::new(MemoryReplySlots::default());
        let parked = Arc::new(MemoryParkedReplies::default());
        let contexts = Arc::new(MemoryContextTokens::default());
        let streams: Arc<dyn shared::core::ports::Streams> = Arc::new(MemoryStreams::default());
        if !config.ilink.is_empty() {
            let poller = shared::channels::ilink::Poller::new(
                shared::channels::Apis::from_env(&env)?.ilink,
                queue.clone(),
                // iLink's markers: a message seen again after a lost cursor comes later than
                // the queue's deduplication reaches.
                Arc::new(MemoryDedupe::default()),
                contexts.clone(),
                Arc::new(MemoryLeases::default()),
                Arc::new(MemoryPollState::default()),
                Arc::new(SystemClock),
            );
            tokio::spawn(crate::ilink::poll_forever(Arc::new(poller), config.ilink.clone()));
        }
        let ports = CallbackPorts {
            publisher: queue,
            slots: slots.clone(),
            parked: parked.clone(),
            streams: streams.clone(),
            clock: Arc::new(SystemClock),
            media: Some(media_store.clone()),
            metrics: Arc::new(crate::outbound::PrintMetrics),
        };
        let callbacks = callback_services(&config, ports);
        // The sender's uploads and the dispatcher's passive replies share the media id cache.
        let http = shared::services::bots::http_client()?;
        let files = shared::services::files::OutFiles {
            store: media_store.clone(),
            ids: Arc::new(shared::adapters::memory::MemoryMediaIds::default()),
            http: http.clone(),
            allow_loopback: true,
        };
        let (sender, dead) = crate::outbound::memory_sender(
            shared_config,
            &env,
            contexts,
            parked,
            streams.clone(),
            windows,
            files.clone(),
        )?;
        let (tx, records) = mpsc::unbounded_channel();
        tokio::spawn(crate::outbound::run_memory(Arc::new(sender), dead, tx.clone(), records));
        let dispatcher = Dispatcher {
            bot: {
                let queue =
                    config.bots.named.values().any(|bot| matches!(bot, shared::core::bot::BotConfig::Queue)).then(
                        || {
                            let (bot_queue, bot_rx) = MemoryQueue::new();
                            tokio::spawn(show_bot_queue(bot_rx));
                            Arc::new(bot_queue) as Arc<dyn shared::core::ports::Publisher>
                        },
                    );
                let ports = shared::services::router::RouterPorts {
                    bots: shared::services::bots::BotPorts {
                        media: Some(media_store),
                        conversations: Some(Arc::new(shared::adapters::memory::MemoryConversations::default())),
                        queue,
                    },
                    counters: Some(Arc::new(shared::adapters::memory::MemoryCounters::default())),
                    metrics: Arc::new(crate::outbound::PrintMetrics),
                    clock: Arc::new(SystemClock),
                };
                Arc::new(crate::trace::TracedBot(Arc::new(shared::services::router::Router::new(
                    &config, &http, ports,
                ))))
            },
            slots,
            outbound: Arc::new(crate::outbound::MemoryOutboundQueue(tx.clone())),
            typing: dispatcher::typing(&config, &env, &http),
            requeue: None,
            dead_letter: None,
            max_receives: None,
            streams: Some(streams),
            calls: dispatcher::bot_calls(&config, Arc::new(MemoryDedupe::default())),
            files: Some(Arc::new(files)),
        };
        (callbacks, Some((rx, dispatcher)), OutboundSink::Memory(tx))
    };
    print_banner(&config, &banner_env, &loaded.origin, addr, args.aws, sandbox.is_some());
    if let Some((rx, dispatcher)) = inbound {
        tokio::spawn(show_and_dispatch(rx, Arc::new(dispatcher)));
    }

    let config = Arc::new(config);
    let chats = Arc::new(crate::chat::Chats::new(config.clone(), sandbox.clone(), format!("http://{addr}"), args.aws));
    if let Some(fake) = &sandbox {
        tokio::spawn(crate::sandbox::show_sends(fake.clone(), format!("http://{addr}"), chats.clone()));
    }
    let state = Arc::new(DevState { callbacks: callbacks.into_iter().collect(), outbound, sandbox, config });
    let page = Router::new()
        .route("/", get(crate::chat::page))
        .route("/events", get(crate::feed::events))
        .route("/sandbox/chats", get(crate::chat::list))
        .route(
            "/sandbox/say",
            // A picture of up to ATTACH_MAX, in base64.
            post(crate::chat::say)
                .layer(axum::extract::DefaultBodyLimit::max(crate::chat::ATTACH_MAX / 3 * 4 + 64 * 1024)),
        )
        .route("/sandbox/attached/{n}", get(crate::chat::attached))
        .route("/sandbox/shown/{name}", get(crate::chat::shown))
        .with_state(chats);
    let router = Router::new()
        .route("/routes", get(index))
        .route("/{channel}/{app}", any(callback_route))
        .route("/outbound", post(outbound_route))
        .route("/sandbox/sends", get(sandbox_sends))
        .route("/sandbox/aibot/response_url", post(sandbox_response_url))
        .route(
            "/sandbox/media/{channel}/{account}",
            // A user's file may be as large as the platforms send (the media step's 100 MB cap).
            post(sandbox_media).layer(axum::extract::DefaultBodyLimit::max(SANDBOX_FILE_MAX)),
        )
        .route("/sandbox/file/{media_id}", get(sandbox_file))
        .route("/sandbox/kf/{account}", post(sandbox_kf))
        .with_state(state)
        .merge(page)
        .merge(crate::media::routes(media_folder));
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// On the local emulator with no resource names given, creates `wxbridge-dev-*` resources (with the
/// sandbox, `wxbridge-sandbox-<time>-*`: the sandbox's WeChat lives as long as the process, so
/// what an earlier run stored — a 微信客服 cursor, tokens, media ids, an iLink poller's lease,
/// messages in flight — would not match it). Never on real AWS: there the deployed stack's names
/// must be given.
async fn local_resources(mut env: Env, sdk: &shared::adapters::aws::SdkConfig, sandbox: bool) -> anyhow::Result<Env> {
    if env.table.is_some()
        && env.inbound_queue_url.is_some()
        && env.outbound_queue_url.is_some()
        && env.dlq_url.is_some()
        && env.media_queue_url.is_some()
        && env.media_bucket.is_some()
    {
        return Ok(env);
    }
    if !env.aws_is_local() {
        anyhow::bail!(
            "--aws needs WXBRIDGE_TABLE, WXBRIDGE_INBOUND_QUEUE_URL, WXBRIDGE_OUTBOUND_QUEUE_URL, \
             WXBRIDGE_DLQ_URL, WXBRIDGE_MEDIA_QUEUE_URL and WXBRIDGE_MEDIA_BUCKET (a deployed stack's outputs), \
             or AWS_ENDPOINT_URL pointing at the local emulator (scripts/dev --aws starts one)"
        );
    }
    let prefix = if sandbox {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        format!("wxbridge-sandbox-{}", now.as_millis())
    } else {
        "wxbridge-dev".to_owned()
    };
    let names = shared::adapters::aws::resources::ResourceNames::new(&prefix);
    let urls = shared::adapters::aws::resources::create_all(
        &aws_sdk_dynamodb::Client::new(sdk),
        &aws_sdk_sqs::Client::new(sdk),
        &names,
    )
    .await
    .context("cannot create the local table and queues")?;
    let s3 = shared::adapters::aws::S3MediaStore::new(sdk, &names.bucket, true);
    shared::adapters::aws::resources::create_bucket(s3.client(), &names.bucket)
        .await
        .context("cannot create the local media bucket")?;
    // Names given in the environment win; the rest are the dev resources.
    let table = env.table.get_or_insert(names.table).clone();
    let inbound = env.inbound_queue_url.get_or_insert(urls.inbound).clone();
    let outbound = env.outbound_queue_url.get_or_insert(urls.outbound).clone();
    env.dlq_url.get_or_insert(urls.outbound_dlq);
    env.inbound_dlq_url.get_or_insert(urls.inbound_dlq);
    env.media_queue_url.get_or_insert(urls.media);
    env.media_bucket.get_or_insert(names.bucket);
    env.bot_queue_url.get_or_insert(urls.bot);
    env.kf_queue_url.get_or_insert(urls.kf_pull);
    println!("local emulator: table {table}, inbound queue {inbound}, outbound queue {outbound}");
    Ok(env)
}

fn print_banner(config: &Config, env: &Env, origin: &str, addr: SocketAddr, aws: bool, sandbox: bool) {
    use crate::ui;
    println!("wxbridge dev listening on http://{addr}");
    println!("  chat page: {}", ui::bold(&format!("http://{addr}/")));
    println!("  config: {origin}");
    println!(
        "  storage: {}",
        if aws { "DynamoDB + SQS + S3 (AWS environment)" } else { "in memory, media in a temp folder" }
    );
    if sandbox {
        println!("  WeChat: {} (sends are shown here, nothing leaves this machine)", ui::warn("sandbox"));
    } else {
        println!("  WeChat: sends go to");
        for host in shared::channels::API_HOSTS {
            match env.api_base_set(host.var) {
                Some(base) => println!("    {:<17} {} (from {})", host.name, ui::warn(base), host.var),
                None => println!("    {:<17} {} (WeChat's)", host.name, ui::ok(host.default)),
            }
        }
    }
    for (route, what, name) in shared::channels::callback_accounts(config) {
        println!("  {:<22} POST|GET http://{addr}/{route}/{name}", format!("{what} {name}"));
    }
    for bot in &config.ilink {
        println!("  iLink bot {:<16} long-polling {} (no public URL needed)", bot.account, bot.base_url);
    }
    if config.wecom.is_empty() && config.oa.is_empty() && config.aibots.is_empty() && config.ilink.is_empty() {
        println!("  (no WeCom apps, Official Accounts, AI bots or iLink bots configured)");
    }
    println!("  outbound: POST http://{addr}/outbound with Outbound JSON (schemas/outbound.v1.json)");
    let mut tries = Vec::new();
    if !config.wecom.is_empty() {
        tries.push("scripts/wxbridge simulate wecom --text \"hello\"".to_owned());
    }
    if !config.oa.is_empty() {
        tries.push("scripts/wxbridge simulate oa --text \"你好\"".to_owned());
    }
    if let Some(bot) = config.aibots.first() {
        tries.push(format!("scripts/wxbridge simulate aibot --text \"@{} hi\"", bot.bot_name));
    }
    for (i, command) in tries.iter().enumerate() {
        println!("  {} {command}", if i == 0 { "try:" } else { "    " });
    }
}

/// `GET /sandbox/sends`: every send the sandbox received, in order (404 outside the sandbox).
async fn sandbox_sends(State(state): State<Arc<DevState>>) -> Response {
    match &state.sandbox {
        Some(fake) => {
            let sends: Vec<serde_json::Value> =
                fake.deliveries().iter().map(|d| crate::sandbox::describe(d, fake)).collect();
            axum::Json(sends).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not in sandbox mode\n").into_response(),
    }
}

/// `POST /sandbox/aibot/response_url`: a new single-use `response_url` of the sandbox, for a
/// simulated AI-bot message (404 outside the sandbox).
async fn sandbox_response_url(State(state): State<Arc<DevState>>) -> Response {
    match &state.sandbox {
        Some(fake) => fake.aibot_response_url().into_response(),
        None => (StatusCode::NOT_FOUND, "not in sandbox mode\n").into_response(),
    }
}

/// The largest file `simulate --image` hands to the sandbox.
const SANDBOX_FILE_MAX: usize = 100 * 1024 * 1024;

/// `POST /sandbox/media/{channel}/{account}?name=…`: keeps the body as a file a user sent, as
/// the channel keeps it; answers what the channel's message names it by: a WeCom app's or an
/// Official Account's `MediaId`, or an AI bot's encrypted 5-minute URL.
async fn sandbox_media(
    State(state): State<Arc<DevState>>,
    Path((channel, account)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(fake) = &state.sandbox else {
        return (StatusCode::NOT_FOUND, "not in sandbox mode\n").into_response();
    };
    let name =
        query.get("name").and_then(|n| shared::core::media::clean_file_name(n)).unwrap_or_else(|| "image".into());
    let mime = shared::core::media::sniff(&body[..body.len().min(64)]).unwrap_or("application/octet-stream");
    let config = &state.config;
    let named = match channel.as_str() {
        "wecom" => config.wecom_app(&account).map(|app| fake.add_wecom_media(&app.corp_id, body.to_vec(), &name, mime)),
        "oa" => config
            .oa
            .iter()
            .find(|oa| oa.app == account)
            .map(|oa| fake.add_oa_media(&oa.app_id, body.to_vec(), &name, mime)),
        "aibot" => config.aibots.iter().find(|bot| bot.name == account).map(|bot| {
            use base64::Engine as _;
            let key = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bot.encoding_aes_key.bytes());
            fake.aibot_media_url(&body, &key, Some(&name))
        }),
        _ => None,
    };
    match named {
        Some(named) => named.into_response(),
        None => {
            (StatusCode::NOT_FOUND, format!("no {channel} account named '{account}' in the config\n")).into_response()
        }
    }
}

/// `POST /sandbox/kf/{account}?user=…` with the text as body: a WeChat user writes to the 微信客服
/// account; answers the Token of the `kf_msg_or_event` callback WeChat would send next.
async fn sandbox_kf(
    State(state): State<Arc<DevState>>,
    Path(account): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let (Some(fake), Some(kf)) = (&state.sandbox, state.config.kf.iter().find(|k| k.name == account)) else {
        return (StatusCode::NOT_FOUND, "not in sandbox mode, or no such kf account\n").into_response();
    };
    let Some(user) = query.get("user").filter(|u| !u.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "give ?user=\n").into_response();
    };
    if body.is_empty() {
        return (StatusCode::BAD_REQUEST, "the body is the text the user writes\n").into_response();
    }
    fake.kf_customer_says(&kf.open_kfid, user, &body);
    fake.kf_callback_token(&kf.open_kfid).into_response()
}

/// `GET /sandbox/file/{media_id}`: a file the bridge uploaded to (or a member sent through) the
/// sandbox, as WeChat keeps it.
async fn sandbox_file(State(state): State<Arc<DevState>>, Path(media_id): Path<String>) -> Response {
    let Some((name, bytes)) = state.sandbox.as_ref().and_then(|fake| fake.media(&media_id)) else {
        return (StatusCode::NOT_FOUND, "no such file in the sandbox\n").into_response();
    };
    let mime = shared::core::media::sniff(&bytes[..bytes.len().min(64)]).unwrap_or("application/octet-stream");
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static(mime));
    if let Ok(value) = shared::core::media::attachment(&name).parse() {
        response.headers_mut().insert(axum::http::header::CONTENT_DISPOSITION, value);
    }
    response
}

/// Prints what a queue bot's consumer would read (in memory there is no consumer: POST its
/// answers to `/outbound`).
async fn show_bot_queue(mut rx: UnboundedReceiver<QueueMessage>) {
    while let Some(message) = rx.recv().await {
        println!("bot queue ← {}", message.body);
    }
}

/// Prints each published Inbound, as a bot would receive it, and hands it to the dispatcher.
async fn show_and_dispatch(mut rx: UnboundedReceiver<QueueMessage>, dispatcher: Arc<Dispatcher>) {
    // As the FIFO inbound queue hands them out: one conversation's messages one at a time, in
    // order; conversations in parallel.
    let mut conversations = shared::adapters::memory::GroupedTasks::default();
    while let Some(message) = rx.recv().await {
        let dispatcher = dispatcher.clone();
        let body = message.body.clone();
        let group = shared::core::callback::attribute(&message, shared::core::callback::FIFO_GROUP).unwrap_or_default();
        let summary = crate::trace::inbound_summary(&message.body);
        println!("inbound queue ← {summary}");
        crate::trace::queued(&message.body);
        conversations.spawn(group, async move {
            let _working = crate::trace::working_on_inbound(crate::feed::Stage::Dispatch, &body);
            // Bot errors would be retried by SQS on AWS; here they are shown.
            if let Err(err) = dispatcher.dispatch(&body).await {
                println!("dispatcher ✗ {err}");
                let inbound: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                crate::feed::emit(
                    "note",
                    crate::feed::chat_of_inbound(&inbound).as_deref(),
                    inbound["id"].as_str(),
                    serde_json::json!({"level": "error", "text": format!("dispatcher: {err} (retried by the queue on AWS)")}),
                );
            }
        });
    }
}

async fn index(State(state): State<Arc<DevState>>) -> impl IntoResponse {
    let mut routes: Vec<String> = state.callbacks.keys().map(|c| format!("POST /{c}/{{app}}")).collect();
    routes.sort();
    format!("wxbridge dev: {}\n", routes.join(", "))
}

/// `POST /outbound`: queues an `Outbound` for the sender, as a bot would on the outbound queue.
async fn outbound_route(
    State(state): State<Arc<DevState>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if crate::chat::cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "not from another site\n").into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n").into_response();
    };
    let message = match Outbound::parse(text) {
        Ok(message) => message,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    let queued = match &state.outbound {
        OutboundSink::Memory(tx) => {
            let id = shared::core::ports::claim_token();
            let record = Record {
                message_id: id.clone(),
                receipt_handle: id,
                body: text.to_owned(),
                receive_count: 1,
                group: None,
            };
            tx.send(record).map_err(|_| "the sender has stopped".to_owned())
        }
        OutboundSink::Sqs { client, queue_url } => client
            .send_message()
            .queue_url(queue_url)
            .message_body(text)
            .send()
            .await
            .map(drop)
            .map_err(|err| aws_sdk_sqs::error::DisplayErrorContext(&err).to_string()),
    };
    match queued {
        Ok(()) => (StatusCode::ACCEPTED, format!("queued {}\n", message.idempotency_key)).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n")).into_response(),
    }
}

/// `/{channel}/{app}`: the channel's callback service, handed the request exactly as API Gateway
/// hands it to that channel's function.
async fn callback_route(
    State(state): State<Arc<DevState>>,
    Path((channel, app)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(service) = state.callbacks.get(channel.as_str()) else {
        return (StatusCode::NOT_FOUND, format!("no channel /{channel}\n")).into_response();
    };
    // A sandbox user's callback names its message; WeChat's do not.
    let msg = request.headers().get(crate::chat::TRACE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut hop = CallbackHop {
        route: format!("{} /{channel}/{app}", request.method()),
        msg,
        started: std::time::Instant::now(),
        status: None,
    };
    let response = match lambda_request(app, request).await {
        Ok(request) => to_axum(shared::adapters::lambda::handle_http(service.as_ref(), request).await),
        Err(response) => response,
    };
    hop.status = Some(response.status());
    response
}

/// A callback's hop for the feed, reported when the request ends: with its status, or as
/// abandoned when the caller hung up first (WeChat waits 5 s).
struct CallbackHop {
    route: String,
    msg: Option<String>,
    started: std::time::Instant,
    status: Option<StatusCode>,
}

impl Drop for CallbackHop {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_millis() as u64;
        let (status, answer) = match self.status {
            Some(status) => (Some(status.as_u16()), status.canonical_reason().unwrap_or_default().to_owned()),
            None => (None, "no answer: the caller hung up first".to_owned()),
        };
        crate::feed::emit(
            "callback",
            None,
            self.msg.as_deref(),
            serde_json::json!({"route": self.route, "status": status, "ms": ms, "answer": answer}),
        );
    }
}

/// An API Gateway request as the Lambda handlers receive it.
async fn lambda_request(app: String, request: Request) -> Result<lambda_http::Request, Response> {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES + 1).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response());
    };
    Ok(lambda_http::http::Request::from_parts(parts, lambda_http::Body::from(bytes.to_vec()))
        .with_path_parameters(HashMap::from([("app".to_owned(), app)])))
}

fn to_axum(response: lambda_http::Response<lambda_http::Body>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, axum::body::Body::from(body.as_ref().to_vec()))
}
