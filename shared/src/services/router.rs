//! The bot in front of the bots: for each message, the account's rules say who may talk (an
//! allow-list), which bot answers (the account's, its group's, or the default), whether the
//! sender or the conversation is over a spending limit, and whether the message resets the
//! conversation; only then is the bot called.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::channels::Config;
use crate::core::bot::{conversation_key, AnswerSink, Bot, BotConfig, BotError, Limits, Reset, DEFAULT_BOT};
use crate::core::envelope::{Content, Inbound};
use crate::core::http::Http;
use crate::core::policy::Policies;
use crate::core::ports::{Clock, Conversations, CounterWindow, Counters, Metrics};
use crate::services::bots::{build, BotPorts};

/// One configured bot: how it is called, what it may cost, how it is reset.
struct Named {
    bot: Arc<dyn Bot>,
    limits: Option<Limits>,
    reset: Option<Reset>,
}

/// Routes each message to its bot, after the account's rules.
pub struct Router {
    bots: BTreeMap<String, Named>,
    /// Answers when no bot is configured at all (a config built by hand): the echo bot.
    fallback: Named,
    policies: Policies,
    conversations: Option<Arc<dyn Conversations>>,
    counters: Option<Arc<dyn Counters>>,
    metrics: Arc<dyn Metrics>,
    clock: Arc<dyn Clock>,
}

/// What the router needs besides the config.
pub struct RouterPorts {
    pub bots: BotPorts,
    /// Spending-limit counters; without them limits are not enforced (said at start).
    pub counters: Option<Arc<dyn Counters>>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
}

/// What a message meets before its bot.
enum Gate {
    /// The bot answers.
    Pass,
    /// Answered without the bot (a refusal, a notice, a reset's confirmation: maybe nothing).
    Answered(Vec<Content>),
}

const MINUTE: u64 = 60;
const DAY: u64 = 24 * 3600;

impl Router {
    /// Every bot of `config`, built on `http` and `ports`.
    pub fn new(config: &Config, http: &Http, ports: RouterPorts) -> Self {
        let bots = config
            .bots
            .named
            .iter()
            .map(|(name, bot)| {
                let named = Named {
                    bot: build(name, bot, http, &ports.bots),
                    limits: config.bots.limits.get(name).cloned(),
                    reset: bot.reset().cloned(),
                };
                (name.clone(), named)
            })
            .collect();
        if ports.counters.is_none() && !config.bots.limits.is_empty() {
            tracing::warn!("spending limits are configured but no counter store is: they are not enforced");
        }
        Self {
            bots,
            fallback: Named { bot: Arc::new(crate::services::bots::EchoBot), limits: None, reset: None },
            policies: config.policies.clone(),
            conversations: ports.bots.conversations.clone(),
            counters: ports.counters,
            metrics: ports.metrics,
            clock: ports.clock,
        }
    }

    /// The bot for `inbound`, by its name (the config check makes every name a bot, and the
    /// default is always there).
    fn pick(&self, inbound: &Inbound) -> (&str, &Named) {
        let name = self.policies.of(inbound).bot_for(inbound).unwrap_or(DEFAULT_BOT);
        match self.bots.get_key_value(name).or_else(|| self.bots.get_key_value(DEFAULT_BOT)) {
            Some((name, named)) => (name.as_str(), named),
            None => (DEFAULT_BOT, &self.fallback),
        }
    }

    /// The rules, in order: the allow-list, the reset command, the spending limits.
    async fn gate(&self, inbound: &Inbound, name: &str, named: &Named) -> Result<Gate, BotError> {
        let channel = inbound.channel.as_str();
        let policy = self.policies.of(inbound);
        if let Err(why) = policy.allow.check(inbound) {
            tracing::info!(id = %inbound.id, reason = why.as_str(), "the sender may not talk to this account's bot");
            let properties = [("channel", channel), ("account", inbound.account.as_str()), ("reason", why.as_str())];
            self.metrics.count("Refused", &properties);
            let refusal = policy.allow.refusal.iter().map(|text| Content::Text { text: text.clone() });
            return Ok(Gate::Answered(refusal.collect()));
        }
        if let (Some(reset), Some(text)) = (&named.reset, inbound.text.as_deref()) {
            if reset.matches(text) {
                self.reset(inbound, name).await?;
                return Ok(Gate::Answered(vec![Content::Text { text: reset.reply.clone() }]));
            }
        }
        if let (Some(limits), Some(counters)) = (&named.limits, &self.counters) {
            if let Some(notice) = self.over_limit(inbound, name, limits, counters.as_ref()).await? {
                return Ok(Gate::Answered(notice));
            }
        }
        Ok(Gate::Pass)
    }

    /// Clears the conversation with bot `name`: its turns and backend conversation id, and a new
    /// session key for a gateway that keeps history itself.
    async fn reset(&self, inbound: &Inbound, name: &str) -> Result<(), BotError> {
        let conversations = self.conversations.as_ref().ok_or_else(|| BotError("no conversation store".into()))?;
        let key = format!("{name}#{}", conversation_key(inbound));
        let failed = |e: crate::core::ports::PortError| BotError(format!("cannot reset the conversation: {e}"));
        for _ in 0..8 {
            let mut state = conversations.load(&key).await.map_err(failed)?;
            state.turns.clear();
            state.external_id = None;
            state.epoch += 1;
            if conversations.save(&key, &state, RESET_KEPT).await.map_err(failed)? {
                tracing::info!(id = %inbound.id, bot = name, "the conversation was reset");
                return Ok(());
            }
        }
        Err(BotError("the conversation kept changing while it was reset".into()))
    }

    /// Counts the message against the bot's limits: `None` when within them; else the notice
    /// (once per window, empty after) and a metric.
    async fn over_limit(
        &self,
        inbound: &Inbound,
        name: &str,
        limits: &Limits,
        counters: &dyn Counters,
    ) -> Result<Option<Vec<Content>>, BotError> {
        let now = self.clock.unix();
        let user = format!("{}:{}:{}", inbound.channel.as_str(), inbound.account, inbound.sender.id);
        let conversation = conversation_key(inbound);
        let checks = [
            ("user", "d", &user, limits.user_per_day, DAY),
            ("conversation", "d", &conversation, limits.conversation_per_day, DAY),
            ("user", "m", &user, limits.user_per_minute, MINUTE),
            ("conversation", "m", &conversation, limits.conversation_per_minute, MINUTE),
        ];
        let failed = |e: crate::core::ports::PortError| BotError(format!("cannot count against the limits: {e}"));
        let mut windows = Vec::new();
        let mut named = Vec::new();
        for (scope, window, who, limit, span) in checks {
            let Some(limit) = limit else { continue };
            let key = format!("{name}:{scope}:{who}:{window}{}", now / span);
            windows.push(CounterWindow { key, limit, ttl: Duration::from_secs(2 * span) });
            named.push((scope, window));
        }
        // The message's id, short: a day's set of them stays a small item. Counted in all its
        // windows or in none: a message held back by one uses up no other.
        let id = &crate::core::outbound::short_hash(&inbound.id)[..16];
        if let Some(over) = counters.take(&windows, id).await.map_err(failed)? {
            let (Some(&(scope, window)), Some(CounterWindow { key, ttl, .. })) = (named.get(over), windows.get(over))
            else {
                return Err(BotError("the counters named a window that was not asked for".into()));
            };
            let (key, ttl) = (key.clone(), *ttl);
            let per = if window == "m" { "minute" } else { "day" };
            tracing::info!(id = %inbound.id, bot = name, scope, per, "over a spending limit; the bot is not called");
            let properties = [
                ("channel", inbound.channel.as_str()),
                ("account", inbound.account.as_str()),
                ("scope", scope),
                ("per", per),
            ];
            self.metrics.count("OverLimit", &properties);
            let tell = match &limits.notice {
                Some(notice) if counters.first(&key, ttl).await.map_err(failed)? => {
                    vec![Content::Text { text: notice.clone() }]
                }
                _ => Vec::new(),
            };
            return Ok(Some(tell));
        }
        Ok(None)
    }
}

/// How long a reset's record is kept (its count outlives idle history).
const RESET_KEPT: Duration = Duration::from_secs(365 * 24 * 3600);

#[async_trait]
impl Bot for Router {
    async fn answer(&self, inbound: &Inbound) -> Result<Vec<Content>, BotError> {
        let (name, named) = self.pick(inbound);
        match self.gate(inbound, name, named).await? {
            Gate::Answered(replies) => Ok(replies),
            Gate::Pass => named.bot.answer(inbound).await,
        }
    }

    async fn answer_streaming(&self, inbound: &Inbound, sink: &dyn AnswerSink) -> Result<Vec<Content>, BotError> {
        let (name, named) = self.pick(inbound);
        match self.gate(inbound, name, named).await? {
            Gate::Answered(replies) => Ok(replies),
            Gate::Pass => named.bot.answer_streaming(inbound, sink).await,
        }
    }

    /// A queue bot's messages are answered later, unless the allow-list turns them away here.
    fn replies_later(&self, inbound: &Inbound) -> bool {
        let (_, named) = self.pick(inbound);
        named.bot.replies_later(inbound) && self.policies.of(inbound).allow.check(inbound).is_ok()
    }
}

/// Whether any configured bot has side effects worth a lease on its calls (all but echo).
pub fn calls_matter(config: &Config) -> bool {
    config.bots.named.values().any(|bot| !matches!(bot, BotConfig::Echo))
}
