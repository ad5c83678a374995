//! Everything the fake remembers: the directory the test set up, the tokens it issued, the faults
//! waiting to fire and what it observed.
//!
//! One `State` sits behind one `std::sync::Mutex`. Handlers are synchronous and get `&mut State`
//! for the whole request, so a request's checks and its effects are atomic and the lock is never
//! held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::media_store::MediaState;
use crate::types::{Delivery, Fault};
use crate::wire::{random_string, Reject};

/// The default `expires_in` of both WeChat token endpoints.
pub(crate) const DEFAULT_TTL_SECS: u64 = 7200;

/// An AI bot `response_url` lives one hour (wecom-aibot.md §5).
const AIBOT_RESPONSE_TTL: Duration = Duration::from_secs(3600);

/// Longest lifetime we turn into an `Instant`; a test asking for more gets this (an `Instant`
/// overflow would panic).
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Who a token was issued to. The families are isolated: a WeCom token is unknown to the OA
/// endpoints and the other way round, as on the real platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    Wecom { corp_id: String, agent_id: u32 },
    Oa { app_id: String },
}

#[derive(Debug)]
pub(crate) struct Token {
    pub owner: Owner,
    pub expires_at: Instant,
    /// Set by `FakeWechat::expire_tokens`: the token answers 42001 from then on.
    pub expired: bool,
    /// Set when OA `force_refresh` replaced it: the token is then simply invalid (40001).
    pub revoked: bool,
}

/// What an API call's `access_token` turned out to be.
pub(crate) enum TokenStatus<'a> {
    Missing,
    Unknown,
    Expired,
    Valid(&'a Owner),
}

#[derive(Debug)]
pub(crate) struct WecomApp {
    pub corp_id: String,
    pub secret: String,
    pub agent_id: u32,
    /// The token gettoken hands out while it is valid (WeCom returns the same one).
    pub current: Option<String>,
}

#[derive(Debug)]
pub(crate) struct OaApp {
    pub secret: String,
    /// The token stable_token hands out in normal mode while it is valid.
    pub current: Option<String>,
}

/// One issued AI bot `response_url`.
#[derive(Debug)]
pub(crate) struct AibotCode {
    pub expires_at: Instant,
    /// Set by the one accepted POST; every later one is refused.
    pub used: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct AppChat {
    pub name: String,
    pub owner: String,
    pub members: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub wecom_apps: Vec<WecomApp>,
    pub wecom_users: HashSet<String>,
    pub appchats: HashMap<String, AppChat>,
    /// Robot key → arrival times of its accepted messages in the last minute.
    pub robots: HashMap<String, VecDeque<Instant>>,
    pub oa_apps: HashMap<String, OaApp>,
    pub oa_users: HashSet<String>,
    pub ilink_bots: HashSet<String>,
    /// (bot_token, user_id) → the latest context_token issued to that user.
    pub ilink_users: HashMap<(String, String), String>,
    /// The X-WECHAT-UIN of the previous iLink request, to catch clients that do not make a fresh one.
    pub last_uin: Option<String>,
    /// Accepted sendmessage calls so far; picks the success body shape.
    pub ilink_sent: u64,
    /// Messages queued for each bot's getupdates, in order; a cursor is an offset into it.
    pub ilink_updates: HashMap<String, Vec<serde_json::Value>>,
    /// How long getupdates holds an empty poll.
    pub ilink_hold: Duration,
    /// When set, every pushed message is queued a second time this much later (same message_id),
    /// as the real service often does.
    pub ilink_redeliver: Option<Duration>,
    /// Re-deliveries waiting for their time: (due, bot_token, message).
    pub ilink_pending: Vec<(std::time::Instant, String, serde_json::Value)>,
    /// getupdates requests in flight per bot token (more than one is a client bug).
    pub ilink_polling: HashMap<String, usize>,
    /// typing_ticket → (bot_token, user) it was issued for.
    pub ilink_tickets: HashMap<String, (String, String)>,
    /// The fake's own base URL, which a confirmed QR login names as `baseurl`.
    pub base_url: String,
    pub qr: QrState,
    /// AI bot response codes issued, by code.
    pub aibot_codes: HashMap<String, AibotCode>,
    /// Lifetime of response codes issued from now on.
    pub aibot_response_ttl: Duration,
    /// POSTs refused because their response_url had already been used.
    pub aibot_response_refusals: usize,
    /// Inbound media the download endpoints serve (media.rs).
    pub media: MediaState,
    /// 微信客服 accounts (kf.rs).
    pub kf: crate::kf_store::KfState,
    /// Every WeCom user id and Official Account OpenID exists (the sandbox of `wxbridge dev`).
    pub open_directory: bool,
    pub tokens: HashMap<String, Token>,
    pub ttl_secs: u64,
    pub faults: HashMap<String, VecDeque<Fault>>,
    pub calls: HashMap<String, usize>,
    pub deliveries: Vec<Delivery>,
    /// WeCom app messages sent, by what `enable_duplicate_check` compares, and when.
    pub wecom_sent: Vec<(String, std::time::Instant)>,
    pub problems: Vec<String>,
    /// Every request and answer, once [`crate::FakeWechat::record_exchanges`] turned it on.
    pub exchanges: Option<Vec<crate::types::Exchange>>,
}

/// The login side of the fake (iLink QR login, handled in `ilink_login`).
#[derive(Debug, Default)]
pub(crate) struct QrState {
    /// Statuses the next status polls answer, in order; `wait` once it runs out.
    pub script: VecDeque<String>,
    /// The bot account and scanning user a confirmed login names.
    pub login: Option<(String, String)>,
    /// Issued codes → still usable (an expired one stays expired).
    pub codes: HashMap<String, bool>,
    /// `local_token_list` of each POSTed `get_bot_qrcode`.
    pub known_tokens: Vec<Vec<String>>,
    /// Scanning user → the token their last login issued.
    pub tokens_by_user: HashMap<String, String>,
    pub issued_tokens: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            wecom_apps: Vec::new(),
            wecom_users: HashSet::new(),
            appchats: HashMap::new(),
            robots: HashMap::new(),
            oa_apps: HashMap::new(),
            oa_users: HashSet::new(),
            ilink_bots: HashSet::new(),
            ilink_users: HashMap::new(),
            last_uin: None,
            ilink_sent: 0,
            ilink_updates: HashMap::new(),
            ilink_hold: Duration::from_millis(300),
            ilink_redeliver: None,
            ilink_pending: Vec::new(),
            ilink_polling: HashMap::new(),
            ilink_tickets: HashMap::new(),
            base_url: String::new(),
            qr: Default::default(),
            aibot_codes: HashMap::new(),
            aibot_response_ttl: AIBOT_RESPONSE_TTL,
            aibot_response_refusals: 0,
            media: MediaState::default(),
            kf: crate::kf_store::KfState::default(),
            open_directory: false,
            tokens: HashMap::new(),
            ttl_secs: DEFAULT_TTL_SECS,
            faults: HashMap::new(),
            calls: HashMap::new(),
            deliveries: Vec::new(),
            wecom_sent: Vec::new(),
            problems: Vec::new(),
            exchanges: None,
        }
    }
}

impl State {
    pub fn knows_wecom_user(&self, user: &str) -> bool {
        self.open_directory || self.wecom_users.contains(user)
    }

    pub fn token_status(&self, token: Option<&str>) -> TokenStatus<'_> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return TokenStatus::Missing;
        };
        match self.tokens.get(token) {
            None => TokenStatus::Unknown,
            Some(t) if t.revoked => TokenStatus::Unknown,
            Some(t) if t.expired || Instant::now() >= t.expires_at => TokenStatus::Expired,
            Some(t) => TokenStatus::Valid(&t.owner),
        }
    }

    fn is_live(&self, token: &str) -> bool {
        matches!(self.token_status(Some(token)), TokenStatus::Valid(_))
    }

    /// Seconds left on a live token, rounded up so a client never sees 0 for a usable token.
    fn remaining_secs(&self, token: &str) -> u64 {
        self.tokens.get(token).map_or(0, |t| {
            let left = t.expires_at.saturating_duration_since(Instant::now());
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
    }

    fn issue(&mut self, owner: Owner, len: usize) -> String {
        let token = random_string(len);
        let ttl = Duration::from_secs(self.ttl_secs.min(MAX_TTL_SECS));
        let token_state = Token { owner, expires_at: Instant::now() + ttl, expired: false, revoked: false };
        self.tokens.insert(token.clone(), token_state);
        token
    }

    /// The token of WeCom app `index`: the current one while it lives, else a fresh one.
    /// Returns the token and its `expires_in`.
    pub fn wecom_token_for(&mut self, index: usize) -> (String, u64) {
        let current = self.wecom_apps.get(index).and_then(|a| a.current.clone());
        if let Some(token) = current.filter(|t| self.is_live(t)) {
            let left = self.remaining_secs(&token);
            return (token, left);
        }
        let Some(app) = self.wecom_apps.get(index) else {
            // Unreachable for callers that looked the index up; answer something harmless.
            return (String::new(), 0);
        };
        let owner = Owner::Wecom { corp_id: app.corp_id.clone(), agent_id: app.agent_id };
        let token = self.issue(owner, 96);
        if let Some(app) = self.wecom_apps.get_mut(index) {
            app.current = Some(token.clone());
        }
        (token, self.ttl_secs)
    }

    /// The OA stable token of `app_id`. `force` revokes the current one first, as
    /// `force_refresh:true` does. Returns the token and its `expires_in`.
    pub fn oa_token_for(&mut self, app_id: &str, force: bool) -> (String, u64) {
        let current = self.oa_apps.get(app_id).and_then(|a| a.current.clone());
        if let Some(token) = current {
            if force {
                if let Some(t) = self.tokens.get_mut(&token) {
                    t.revoked = true;
                }
            } else if self.is_live(&token) {
                let left = self.remaining_secs(&token);
                return (token, left);
            }
        }
        let token = self.issue(Owner::Oa { app_id: app_id.to_owned() }, 136);
        if let Some(app) = self.oa_apps.get_mut(app_id) {
            app.current = Some(token.clone());
        }
        (token, self.ttl_secs)
    }

    /// Checks the `access_token` of a WeCom API call; returns the issuing app's (corp_id, agent_id).
    pub fn wecom_caller(&self, token: Option<&str>) -> Result<(String, u32), Reject> {
        match self.token_status(token) {
            TokenStatus::Missing => Err(Reject::code(41001, "no access_token in the query string")),
            TokenStatus::Unknown => Err(Reject::code(40014, "access_token was never issued by WeCom gettoken")),
            TokenStatus::Expired => Err(Reject::code(42001, "access_token has expired; fetch a new one")),
            TokenStatus::Valid(Owner::Wecom { corp_id, agent_id }) => Ok((corp_id.clone(), *agent_id)),
            TokenStatus::Valid(Owner::Oa { .. }) => {
                Err(Reject::code(40014, "access_token is an Official Account token, not a WeCom one"))
            }
        }
    }

    /// Checks the `access_token` of an OA API call; returns the app_id that owns it.
    pub fn oa_caller(&self, token: Option<&str>) -> Result<String, Reject> {
        match self.token_status(token) {
            TokenStatus::Missing => Err(Reject::code(41001, "no access_token in the query string")),
            TokenStatus::Unknown => {
                Err(Reject::code(40001, "access_token is unknown or was replaced by a force_refresh"))
            }
            TokenStatus::Expired => Err(Reject::code(42001, "access_token has expired; fetch a new one")),
            TokenStatus::Valid(Owner::Oa { app_id }) => Ok(app_id.clone()),
            TokenStatus::Valid(Owner::Wecom { .. }) => {
                Err(Reject::code(40001, "access_token is a WeCom token, not an Official Account one"))
            }
        }
    }
}
