//! One folder per WeChat product, and the registry: the one place that lists the channels.
//!
//! A channel folder holds everything its product needs: its config section, wire types,
//! callback service (where it has one), API client and outbound delivery. Adding a channel is a
//! new folder plus a line in each list below; channel-neutral code (`services`) reaches a channel
//! only through these lists.

pub mod aibot;
pub mod ilink;
pub mod kf;
pub mod oa;
pub mod robot;
pub mod wecom;

use std::sync::Arc;

use crate::core::bot::Bots;
use crate::core::callback::CallbackService;
use crate::core::config::{ConfigError, Document, Env};
use crate::core::envelope::{Channel, OutChannel};
use crate::core::http::{ApiError, Http, HttpSettings};
use crate::core::media::MediaSource;
use crate::core::outbound::{Delivery, ReplyRoute};
use crate::core::policy::Policies;
use crate::core::ports::{Clock, ContextTokens, ParkedReplies, Publisher, ReplySlots, Streams};
use crate::core::tokens::Tokens;

/// The whole configuration: every channel's section, the bot and the shared settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub wecom: Vec<wecom::WecomApp>,
    pub oa: Vec<oa::OaApp>,
    pub ilink: Vec<ilink::IlinkAccount>,
    pub robots: Vec<robot::Robot>,
    pub aibots: Vec<aibot::AiBot>,
    pub kf: Vec<kf::KfAccount>,
    pub aibot_stream: aibot::StreamWindow,
    /// Every bot by name (`default` among them), with their limits.
    pub bots: Bots,
    /// Each account's rules: its bot, per-group bots, who may talk to it.
    pub policies: Policies,
    pub oa_window: oa::OaWindow,
    /// Callbacks further than this from now are refused (seconds; 0 = off).
    pub replay_window_secs: u64,
}

impl Config {
    /// Parses and validates the JSON document; the first problem is the error.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        Self::check(json).map_err(|mut problems| problems.remove(0))
    }

    /// Parses and validates the JSON document, naming every problem (never an empty list).
    pub fn check(json: &str) -> Result<Self, Vec<ConfigError>> {
        let mut doc = Document::parse(json)?;
        // The accounts' rule fields first: the channels' sections are strict about fields.
        let policies = Policies::take(&mut doc);
        let config = Config {
            wecom: doc.list(),
            oa: doc.list(),
            ilink: doc.list(),
            robots: doc.list(),
            aibots: doc.list(),
            kf: doc.list(),
            aibot_stream: aibot::StreamWindow::from_document(&mut doc),
            bots: Bots::from_document(&mut doc),
            policies,
            oa_window: oa::OaWindow::from_document(&mut doc),
            replay_window_secs: crate::core::callback::replay_window(&mut doc),
        };
        for problem in config.policies.check(|name| config.bots.named.contains_key(name)) {
            doc.problem(problem);
        }
        for (i, account) in config.kf.iter().enumerate() {
            match config.wecom.iter().find(|app| app.app == account.app) {
                None => doc.problem(crate::core::config::invalid(
                    format!("kf[{i}].app"),
                    format!("names no app of the wecom section ('{}')", account.app),
                )),
                Some(app) if app.corp_id != account.corp_id => doc.problem(crate::core::config::invalid(
                    format!("kf[{i}].corp_id"),
                    "differs from the corp_id of its WeCom app",
                )),
                Some(app) if app.secret.is_none() => doc.problem(crate::core::config::invalid(
                    format!("kf[{i}].app"),
                    "its WeCom app needs a secret to pull and send",
                )),
                Some(_) => {}
            }
        }
        doc.finish(config)
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::Read { path: path.display().to_string(), reason: err.to_string() })?;
        Self::parse(&text)
    }

    /// The WeCom app served at `/wecom/{app}`.
    pub fn wecom_app(&self, app: &str) -> Option<&wecom::WecomApp> {
        self.wecom.iter().find(|a| a.app == app)
    }
}

/// An API host a variable can override.
#[derive(Debug, Clone, Copy)]
pub struct ApiHost {
    /// Who calls it, for people.
    pub name: &'static str,
    pub var: &'static str,
    pub default: &'static str,
}

/// The platform API hosts (iLink bots name their own host in their config).
pub const API_HOSTS: &[ApiHost] = &[
    ApiHost { name: "WeCom", var: wecom::api::BASE_VAR, default: wecom::api::DEFAULT_BASE },
    ApiHost { name: "Official Account", var: oa::api::BASE_VAR, default: oa::api::DEFAULT_BASE },
    ApiHost { name: "iLink media CDN", var: ilink::media::CDN_VAR, default: ilink::media::DEFAULT_CDN_BASE },
];

/// Every platform's API client, on one HTTP client.
#[derive(Debug, Clone)]
pub struct Apis {
    pub wecom: wecom::api::WecomApi,
    pub robot: robot::api::RobotApi,
    pub oa: oa::api::OaApi,
    pub ilink: ilink::api::IlinkApi,
    pub aibot: aibot::api::AibotApi,
    /// The HTTP client itself (downloads from links the platforms give).
    pub http: Http,
    /// The iLink media CDN.
    pub ilink_cdn: String,
}

impl Apis {
    /// The clients on `http`, each on its host from `env` (WeChat's unless overridden).
    pub fn new(http: &Http, env: &Env) -> Self {
        let wecom_base = env.api_base(wecom::api::BASE_VAR, wecom::api::DEFAULT_BASE);
        let wecom = wecom::api::WecomApi::new(http, wecom_base);
        Self {
            aibot: aibot::api::AibotApi::new(http, wecom_base),
            robot: robot::api::RobotApi::new(&wecom),
            wecom,
            oa: oa::api::OaApi::new(http, env.api_base(oa::api::BASE_VAR, oa::api::DEFAULT_BASE)),
            ilink: ilink::api::IlinkApi::new(http),
            http: http.clone(),
            ilink_cdn: env.api_base(ilink::media::CDN_VAR, ilink::media::DEFAULT_CDN_BASE).to_owned(),
        }
    }

    /// The clients on a new HTTP client with the default timeouts.
    pub fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(Self::new(&Http::new(&HttpSettings::default())?, env))
    }
}

/// What the callback services share: the inbound queue and the stores they keep state in.
pub struct CallbackPorts {
    pub publisher: Arc<dyn Publisher>,
    pub slots: Arc<dyn ReplySlots>,
    pub parked: Arc<dyn ParkedReplies>,
    pub streams: Arc<dyn Streams>,
    pub clock: Arc<dyn Clock>,
    /// The media store, where the AI bot's finished streams find their images.
    pub media: Option<Arc<dyn crate::core::ports::MediaStore>>,
    /// Where the events a callback only notes are counted.
    pub metrics: Arc<dyn crate::core::ports::Metrics>,
}

/// Every callback service, with the first segment of its route (`/wecom/{app}`, …): what
/// `wxbridge dev` serves in one process; on AWS each is its own function.
pub fn callback_services(config: &Config, ports: CallbackPorts) -> Vec<(&'static str, Arc<dyn CallbackService>)> {
    let CallbackPorts { publisher, slots, parked, streams, clock, media, metrics } = ports;
    let replay = config.replay_window_secs;
    vec![
        (
            wecom::ROUTE,
            Arc::new(
                wecom::WecomCallback::new(&config.wecom, replay, publisher.clone(), clock.clone())
                    .with_metrics(metrics),
            ),
        ),
        (
            oa::ROUTE,
            Arc::new(oa::service::OaCallback::new(
                &config.oa,
                config.oa_window,
                replay,
                publisher.clone(),
                slots,
                parked,
                clock.clone(),
            )),
        ),
        (
            aibot::ROUTE,
            Arc::new(aibot::AibotService::new(
                &config.aibots,
                config.aibot_stream,
                replay,
                aibot::service::AibotPorts { publisher, streams, clock, media },
            )),
        ),
    ]
}

/// Every account with a callback URL, as (route segment, what it is, account name).
pub fn callback_accounts(config: &Config) -> Vec<(&'static str, &'static str, &str)> {
    let wecom = config.wecom.iter().map(|a| (wecom::ROUTE, "WeCom app", a.app.as_str()));
    let oa = config.oa.iter().map(|a| (oa::ROUTE, "Official Account", a.app.as_str()));
    let aibots = config.aibots.iter().map(|b| (aibot::ROUTE, "AI bot", b.name.as_str()));
    wecom.chain(oa).chain(aibots).collect()
}

/// Where replies to each inbound channel go.
pub fn reply_route(channel: Channel) -> ReplyRoute {
    match channel {
        Channel::Wecom => wecom::REPLIES,
        Channel::Oa => oa::REPLIES,
        Channel::Ilink => ilink::REPLIES,
        Channel::WecomAibot => aibot::REPLIES,
        Channel::WecomKf => kf::REPLIES,
    }
}

/// What the deliveries share: the token cache and the ports some channels need.
pub struct DeliveryPorts {
    pub tokens: Arc<Tokens>,
    pub contexts: Arc<dyn ContextTokens>,
    pub parked: Arc<dyn ParkedReplies>,
    pub streams: Arc<dyn Streams>,
    /// 微信客服 reply windows.
    pub windows: Arc<dyn crate::core::ports::CustomerWindows>,
    pub clock: Arc<dyn Clock>,
}

/// Every outbound channel's delivery.
pub struct Deliveries {
    wecom_app: wecom::outbound::WecomDelivery,
    wecom_appchat: wecom::outbound::WecomDelivery,
    robot: robot::outbound::RobotDelivery,
    oa: oa::outbound::OaDelivery,
    ilink: ilink::outbound::IlinkDelivery,
    aibot: aibot::outbound::AibotDelivery,
    kf: kf::outbound::KfDelivery,
}

impl Deliveries {
    pub fn new(config: &Config, apis: &Apis, ports: DeliveryPorts) -> Self {
        let DeliveryPorts { tokens, contexts, parked, streams, windows, clock } = ports;
        Self {
            wecom_app: wecom::outbound::WecomDelivery::app(&config.wecom, &apis.wecom, &tokens),
            wecom_appchat: wecom::outbound::WecomDelivery::appchat(&config.wecom, &apis.wecom, &tokens),
            robot: robot::outbound::RobotDelivery::new(&config.robots, &apis.robot),
            oa: oa::outbound::OaDelivery::new(&config.oa, &apis.oa, &tokens, parked, clock.clone()),
            ilink: ilink::outbound::IlinkDelivery::new(
                &config.ilink,
                &apis.ilink,
                contexts,
                &apis.http,
                &apis.ilink_cdn,
            ),
            kf: kf::outbound::KfDelivery::new(&config.kf, &config.wecom, &apis.wecom, &tokens, windows, clock.clone()),
            aibot: aibot::outbound::AibotDelivery::new(&config.aibots, &apis.aibot, streams, clock),
        }
    }

    /// The delivery of `channel`.
    pub fn get(&self, channel: OutChannel) -> &dyn Delivery {
        match channel {
            OutChannel::WecomApp => &self.wecom_app,
            OutChannel::WecomAppchat => &self.wecom_appchat,
            OutChannel::WecomWebhook => &self.robot,
            OutChannel::Oa => &self.oa,
            OutChannel::Ilink => &self.ilink,
            OutChannel::WecomAibot => &self.aibot,
            OutChannel::WecomKf => &self.kf,
        }
    }
}

/// Every inbound channel's media download.
pub struct MediaSources {
    wecom: wecom::media::WecomMedia,
    oa: oa::media::OaMedia,
    ilink: ilink::media::IlinkMedia,
    aibot: aibot::media::AibotMedia,
    kf: kf::media::KfMedia,
}

impl MediaSources {
    /// The sources of `config`'s accounts. Links the platforms give may point at the
    /// configured API hosts (`trusted`) even when those are internal addresses (the fakes).
    pub fn new(config: &Config, apis: &Apis, tokens: &Arc<Tokens>, trusted: Vec<String>) -> Self {
        Self {
            wecom: wecom::media::WecomMedia::new(&config.wecom, &apis.wecom, tokens),
            oa: oa::media::OaMedia::new(&config.oa, &apis.oa, tokens, trusted.clone()),
            ilink: ilink::media::IlinkMedia::new(&apis.http, &apis.ilink_cdn),
            aibot: aibot::media::AibotMedia::new(&config.aibots, &apis.http, trusted),
            kf: kf::media::KfMedia::new(&config.kf, wecom::media::WecomMedia::new(&config.wecom, &apis.wecom, tokens)),
        }
    }

    /// The hosts of the API bases `env` overrides (empty on AWS, where WeChat's are public).
    pub fn trusted_hosts(env: &Env) -> Vec<String> {
        let bases: Vec<&str> = API_HOSTS.iter().filter_map(|h| env.api_base_set(h.var)).collect();
        crate::core::media::hosts_of(bases)
    }

    /// The media download of `channel`.
    pub fn get(&self, channel: Channel) -> &dyn MediaSource {
        match channel {
            Channel::Wecom => &self.wecom,
            Channel::Oa => &self.oa,
            Channel::Ilink => &self.ilink,
            Channel::WecomAibot => &self.aibot,
            Channel::WecomKf => &self.kf,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_names_every_problem_not_just_the_first() {
        let document = r#"{
            "wecom": [{"app": "bad name", "corp_id": "ww1", "agent_id": 1, "token": "t", "encoding_aes_key": "short"},
                      {"app": "ok", "corp_id": "ww1", "agent_id": "seven", "token": "abcdef", "encoding_aes_key": "x"}],
            "oa": [{"app": "news", "app_id": "wx1", "token": "abcdef", "extra": 1}],
            "ilink": [{"account": "b@im.bot", "bot_token": "", "base_url": "ftp://x"}],
            "replay_window_secs": 5,
            "botz": {}
        }"#;
        let problems = Config::check(document).unwrap_err();
        let fields: Vec<String> = problems
            .iter()
            .map(|p| match p {
                ConfigError::Invalid { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect();
        for want in [
            "wecom[0].token",
            "wecom[0].app",
            "wecom[0].encoding_aes_key",
            "wecom[1].agent_id",
            "oa[0].extra",
            "ilink[0].bot_token",
            "ilink[0].base_url",
            "replay_window_secs",
            "botz",
        ] {
            assert!(fields.iter().any(|f| f == want), "{want} missing from {fields:?}");
        }
        // parse reports the first of them.
        assert!(matches!(Config::parse(document), Err(ConfigError::Invalid { .. })));
    }

    use super::*;
    use crate::channels::oa::OaWindow;
    use crate::core::callback::DEFAULT_REPLAY_WINDOW_SECS;
    use crate::core::config::ConfigError;

    use crate::testing::fixtures::{OA_APP_ID, OA_TOKEN, WECOM_AES_KEY as KEY, WECOM_CORP_ID, WECOM_TOKEN};

    fn doc(wecom_app: &str) -> String {
        format!(r#"{{"wecom": [{wecom_app}]}}"#)
    }

    fn app(overrides: &[(&str, &str)]) -> String {
        let mut fields = vec![
            ("app", "\"hr\"".to_owned()),
            ("corp_id", format!("\"{WECOM_CORP_ID}\"")),
            ("agent_id", "1000002".to_owned()),
            ("token", format!("\"{WECOM_TOKEN}\"")),
            ("encoding_aes_key", format!("\"{KEY}\"")),
            ("secret", "\"s3cr3t-value\"".to_owned()),
        ];
        for (k, v) in overrides {
            match fields.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => fields.push((k, v.to_string())),
            }
        }
        let body: Vec<String> =
            fields.iter().filter(|(_, v)| v != "<drop>").map(|(k, v)| format!("\"{k}\": {v}")).collect();
        format!("{{{}}}", body.join(", "))
    }

    fn error_of(json: &str) -> String {
        Config::parse(json).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let config = Config::parse(&format!(
            r#"{{"wecom": [{}, {}], "oa": [{{"app": "news", "app_id": "{OA_APP_ID}", "token": "{OA_TOKEN}", "encoding_aes_key": "{KEY}"}}],
                 "ilink": [{{"account": "b@im.bot", "bot_token": "t", "base_url": "https://ilink.example/"}}],
                 "robots": [{{"name": "ops", "key": "k"}}], "bot": {{"kind": "openai", "base_url": "http://127.0.0.1:1", "api_key": "sk", "model": "m"}}}}"#,
            app(&[]),
            app(&[("app", "\"sales\"")])
        ))
        .unwrap();
        assert_eq!(config.wecom.len(), 2);
        assert_eq!(config.wecom_app("sales").unwrap().agent_id, 1000002);
        assert!(config.wecom_app("nope").is_none());
        assert_eq!(config.ilink[0].base_url, "https://ilink.example");
        assert_eq!(config.oa_window, OaWindow::default());
        assert_eq!(config.replay_window_secs, DEFAULT_REPLAY_WINDOW_SECS);
        assert!(matches!(config.bots.default_bot(), crate::core::bot::BotConfig::OpenAi { .. }));
    }

    /// A window past the inbound queue's five-minute deduplication (less a minute for clocks),
    /// as earlier versions allowed, still starts the functions: shortened, not refused.
    #[test]
    fn a_replay_window_longer_than_the_queues_deduplication_is_shortened() {
        for secs in [241, 300, 86_400] {
            let config = Config::parse(&format!(r#"{{"replay_window_secs": {secs}}}"#)).unwrap();
            assert_eq!(config.replay_window_secs, crate::core::callback::MAX_REPLAY_WINDOW_SECS, "{secs}");
        }
        assert_eq!(Config::parse(r#"{"replay_window_secs": 0}"#).unwrap().replay_window_secs, 0);
    }

    #[test]
    fn names_the_broken_field() {
        let cases = [
            (doc(&app(&[("encoding_aes_key", "\"short\"")])), "wecom[0].encoding_aes_key"),
            (doc(&app(&[("token", "\"a b\"")])), "wecom[0].token"),
            (doc(&app(&[("app", "\"h/r\"")])), "wecom[0].app"),
            (doc(&app(&[("agent_id", "\"1000002\"")])), "wecom[0].agent_id"),
            (doc(&app(&[("corp_id", "<drop>")])), "wecom[0]"),
            (doc(&app(&[("crop_id", "\"x\"")])), "wecom[0]"),
            (format!(r#"{{"wecom": [{}, {}]}}"#, app(&[]), app(&[])), "wecom[1].app"),
            (r#"{"bot": {"kind": "telepathy"}}"#.to_owned(), "bot"),
            (r#"{"oa_window": {"deliveries": 9}}"#.to_owned(), "oa_window.deliveries"),
            (r#"{"oa_window": {"answer_by_ms": 6000}}"#.to_owned(), "oa_window.answer_by_ms"),
            (r#"{"oa_window": {"hold_ms": 4000}}"#.to_owned(), "oa_window.hold_ms"),
            (
                r#"{"ilink": [{"account": "a", "bot_token": "t", "base_url": "ftp://x"}]}"#.to_owned(),
                "ilink[0].base_url",
            ),
            (r#"{"wecom": {}}"#.to_owned(), "wecom"),
            (r#"{"replay_window_secs": 5}"#.to_owned(), "replay_window_secs"),
            (r#"{"replay_window_secs": 604800}"#.to_owned(), "replay_window_secs"),
            ("not json".to_owned(), "(document)"),
        ];
        for (json, field) in cases {
            let message = error_of(&json);
            assert!(message.starts_with(&format!("config: {field}")), "{json} → {message}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let message = error_of(&doc(&app(&[("encoding_aes_key", "\"SECRETKEYSECRETKEY\"")])));
        assert!(!message.contains("SECRETKEY"), "{message}");
        let message = error_of(&doc(&app(&[("agent_id", "\"SECRETAGENT\"")])));
        assert!(!message.contains("SECRETAGENT"), "{message}");
        let message = error_of(&doc(&app(&[("token", "987654321")])));
        assert!(!message.contains("987654321") && message.contains("wecom[0].token"), "{message}");
        let message = error_of(&doc(&app(&[("token", "987654321")])));
        assert!(!message.contains("987654321") && message.contains("wecom[0].token"), "{message}");
        let config = Config::parse(&doc(&app(&[]))).unwrap();
        let shown = format!("{config:?}");
        for secret in [WECOM_TOKEN, KEY, "s3cr3t-value"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
    }
}
