//! `wxbridge check`: validates a config (file or secret) and the environment, naming every
//! missing or malformed value, and says which channels are ready to receive and to send.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{json, Value};
use shared::channels::Config;
use shared::core::bot::BotConfig;
use shared::core::config::{ConfigError, Env};

use crate::ui;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Config file to check (default: $WXBRIDGE_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Secrets Manager secret to check (default: $WXBRIDGE_CONFIG_SECRET), with the standard AWS
    /// environment.
    #[arg(long, value_name = "NAME_OR_ARN", conflicts_with = "config")]
    secret: Option<String>,
    /// One JSON object on stdout instead of lines for people.
    #[arg(long)]
    json: bool,
}

/// One channel's readiness.
struct Ready {
    what: String,
    receive: Option<bool>,
    send: bool,
    note: String,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    let (origin, text) = match (&args.config, &args.secret, &env.config_file, &env.config_secret) {
        (Some(path), _, _, _) | (None, None, Some(path), _) => (
            path.display().to_string(),
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, Some(secret), _, _) | (None, None, None, Some(secret)) => (
            format!("secret {secret}"),
            shared::adapters::aws::read_secret(&shared::adapters::aws::sdk_config().await, secret).await?,
        ),
        (None, None, None, None) => anyhow::bail!(
            "nothing to check: give --config FILE or --secret NAME (or set WXBRIDGE_CONFIG / WXBRIDGE_CONFIG_SECRET)"
        ),
    };
    let checked = Config::check(&text);
    // A secret is what the deployed functions read: checked as they take it.
    let deployed = origin.starts_with("secret ");
    let checked = checked.and_then(|config| {
        if deployed {
            shared::adapters::aws::deployable(config).map_err(|problem| vec![problem])
        } else {
            Ok(config)
        }
    });
    let environment = environment(&env);
    let env_problems = environment.iter().filter(|(_, state, _)| *state == "malformed").count();
    let ok = checked.is_ok() && env_problems == 0;

    if args.json {
        let (problems, channels) = match &checked {
            Ok(config) => (Vec::new(), readiness(config)),
            Err(problems) => (problems.iter().map(problem_json).collect(), Vec::new()),
        };
        let channels: Vec<Value> = channels
            .iter()
            .map(|r| json!({"channel": r.what, "receive": r.receive, "send": r.send, "note": r.note}))
            .collect();
        let environment: Vec<Value> =
            environment.iter().map(|(name, state, note)| json!({"name": name, "state": state, "note": note})).collect();
        println!(
            "{}",
            json!({"ok": ok, "config": origin, "problems": problems, "channels": channels, "environment": environment})
        );
    } else {
        match &checked {
            Ok(config) => {
                println!("{} {}", ui::ok("✓"), ui::bold(&format!("config {origin}")));
                for r in readiness(config) {
                    let mark = |on: bool| if on { ui::ok("✓") } else { ui::warn("✗") };
                    let receive = r.receive.map(|on| format!("receive {}  ", mark(on))).unwrap_or_default();
                    let note = if r.note.is_empty() { String::new() } else { ui::dim(&format!("  {}", r.note)) };
                    println!("  {:<40} {receive}send {}{note}", r.what, mark(r.send));
                }
            }
            Err(problems) => {
                println!("{} {}", ui::bad("✗"), ui::bold(&format!("config {origin}")));
                for problem in problems {
                    println!("  {} {}", ui::bad("✗"), problem.to_string().trim_start_matches("config: "));
                }
            }
        }
        println!("{}", ui::bold("environment"));
        for (name, state, note) in &environment {
            let mark = match *state {
                "set" => ui::ok("✓"),
                "malformed" => ui::bad("✗"),
                _ => ui::dim("–"),
            };
            println!("  {mark} {name:<28} {}", ui::dim(note));
        }
    }
    let problem_count = checked.as_ref().err().map_or(0, Vec::len) + env_problems;
    if problem_count > 0 {
        anyhow::bail!("{problem_count} problem{} found", if problem_count == 1 { "" } else { "s" });
    }
    Ok(())
}

fn problem_json(problem: &ConfigError) -> Value {
    match problem {
        ConfigError::Invalid { field, reason } => json!({"field": field, "reason": reason}),
        other => json!({"field": null, "reason": other.to_string()}),
    }
}

/// What each configured channel can do with the credentials it has.
fn readiness(config: &Config) -> Vec<Ready> {
    let mut out = Vec::new();
    for app in &config.wecom {
        out.push(Ready {
            what: format!("WeCom app {}", app.app),
            receive: Some(true),
            send: app.secret.is_some(),
            note: if app.secret.is_some() { String::new() } else { "no secret: replies cannot be sent".into() },
        });
    }
    for oa in &config.oa {
        let mode = if oa.encoding_aes_key.is_some() { "compat/safe" } else { "plain" };
        out.push(Ready {
            what: format!("Official Account {} ({mode})", oa.app),
            receive: Some(true),
            send: oa.app_secret.is_some(),
            note: if oa.app_secret.is_some() {
                "passive replies and customer service".into()
            } else {
                "passive replies only: customer service needs app_secret".into()
            },
        });
    }
    for bot in &config.ilink {
        out.push(Ready {
            what: format!("iLink bot {}", bot.account),
            receive: Some(true),
            send: true,
            note: bot.base_url.clone(),
        });
    }
    let window = &config.aibot_stream;
    for bot in &config.aibots {
        out.push(Ready {
            what: format!("AI bot {} (@{})", bot.name, bot.bot_name),
            receive: Some(true),
            // Answers go into the message's stream or its response_url: no secret, no token.
            send: true,
            note: format!(
                "URL <API>/{}/{}, no secret needed; the answer streams for {} (handed over {} s before the end), \
                 then goes once by the message's response_url",
                shared::channels::aibot::ROUTE,
                bot.name,
                duration(window.window_s),
                window.margin_s
            ),
        });
    }
    for kf in &config.kf {
        out.push(Ready {
            what: format!("微信客服 {}", kf.name),
            receive: Some(true),
            send: true,
            note: format!(
                "callbacks on <API>/wecom/{} pull {}; replies within 48 h of the customer's message, 5 per message",
                kf.app, kf.open_kfid
            ),
        });
    }
    for robot in &config.robots {
        out.push(Ready { what: format!("group robot {}", robot.name), receive: None, send: true, note: String::new() });
    }
    for (name, bot) in &config.bots.named {
        let note = match bot {
            BotConfig::Echo => "echo (answers with the same text)".to_owned(),
            BotConfig::EchoStreaming { over } => format!("echo, streamed over {} ms", over.as_millis()),
            BotConfig::Http { url, .. } => format!("http webhook {url}"),
            BotConfig::OpenAi { base_url, model, history, .. } => {
                let history = match history {
                    shared::core::bot::History::None => "no history",
                    shared::core::bot::History::Server => "history kept by the endpoint",
                    shared::core::bot::History::Bridge { .. } => "history kept by the bridge",
                };
                format!("OpenAI-compatible {base_url}, model {model}, {history}")
            }
            BotConfig::Dify { base_url, .. } => format!("Dify {base_url} (conversation kept by Dify)"),
            BotConfig::Queue => "queue (each Inbound on the bot queue; your consumer answers with Outbound)".to_owned(),
        };
        let limited = if config.bots.limits.contains_key(name) { ", with spending limits" } else { "" };
        out.push(Ready { what: format!("bot {name}"), receive: None, send: true, note: format!("{note}{limited}") });
    }
    out
}

/// Seconds as people say them: "6 min", "90 s".
fn duration(secs: u64) -> String {
    if secs >= 60 && secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Each variable the functions read: set, unset (with what needs it) or malformed.
fn environment(env: &Env) -> Vec<(&'static str, &'static str, String)> {
    let url = |value: Option<&String>| match value {
        Some(v) if v.starts_with("https://") || v.starts_with("http://") => "set",
        Some(_) => "malformed",
        None => "unset",
    };
    let named = |value: &Option<String>| if value.is_some() { "set" } else { "unset" };
    let owned = |v: Option<&str>| v.map(str::to_owned);
    let note = |state: &str, purpose: &str| match state {
        "malformed" => "must be an http(s):// URL".to_owned(),
        _ => purpose.to_owned(),
    };
    let config_file = match &env.config_file {
        Some(path) if !path.exists() => ("malformed", format!("{} does not exist", path.display())),
        Some(_) => ("set", "the config file (wins over the secret)".to_owned()),
        None => ("unset", "the config file (local runs)".to_owned()),
    };
    let mut out = vec![
        ("WXBRIDGE_CONFIG", config_file.0, config_file.1),
        ("WXBRIDGE_CONFIG_SECRET", named(&env.config_secret), "the config secret (on Lambda)".to_owned()),
        ("WXBRIDGE_TABLE", named(&env.table), "the DynamoDB table (Lambda, dev --aws)".to_owned()),
    ];
    let mut urls: Vec<(&'static str, Option<String>, String)> = vec![
        ("WXBRIDGE_INBOUND_QUEUE_URL", env.inbound_queue_url.clone(), "the inbound queue (Lambda, dev --aws)".into()),
        (
            "WXBRIDGE_OUTBOUND_QUEUE_URL",
            env.outbound_queue_url.clone(),
            "the outbound queue (Lambda, dev --aws)".into(),
        ),
        ("WXBRIDGE_DLQ_URL", env.dlq_url.clone(), "the outbound DLQ (the sender)".into()),
    ];
    for host in shared::channels::API_HOSTS {
        let purpose = format!("the {} API host (default {})", host.name, host.default);
        urls.push((host.var, owned(env.api_base_set(host.var)), purpose));
    }
    urls.push(("AWS_ENDPOINT_URL", env.aws_endpoint_url.clone(), "an AWS emulator (local runs only)".into()));
    for (name, value, purpose) in urls {
        let state = url(value.as_ref());
        out.push((name, state, note(state, &purpose)));
    }
    out
}
