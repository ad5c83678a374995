//! The `kf` config section: 微信客服 (WeCom Customer Service) accounts, each served by a
//! configured WeCom app (its callback route receives the account's `kf_msg_or_event`, its
//! secret's token pulls and sends).

use serde::Deserialize;

use crate::core::config::{check_id, check_name, invalid, keep, ConfigError, ListSection};

/// How far back a pull without a cursor dispatches (older items are recorded, not answered).
pub const DEFAULT_HISTORY_HORIZON_S: u64 = 600;
/// WeChat keeps three days of messages for `sync_msg`.
pub const MAX_HISTORY_HORIZON_S: u64 = 3 * 24 * 3600;
/// The longest welcome `send_msg_on_event` takes as text.
const MAX_WELCOME_BYTES: usize = 2048;

/// One 微信客服 account.
#[derive(Debug, Clone)]
pub struct KfAccount {
    /// The `account` of its messages and replies.
    pub name: String,
    pub corp_id: String,
    /// The account's `open_kfid` (`wk…`).
    pub open_kfid: String,
    /// The WeCom app whose callback and secret serve this account.
    pub app: String,
    /// Sent when a user enters the session (`enter_session` with a welcome code).
    pub welcome: Option<String>,
    /// Seconds: a pull that starts without a cursor dispatches only items newer than this.
    pub history_horizon_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKfAccount {
    name: String,
    corp_id: String,
    open_kfid: String,
    app: String,
    #[serde(default)]
    welcome: Option<String>,
    #[serde(default)]
    history_horizon_s: Option<u64>,
}

impl ListSection for KfAccount {
    const NAME: &'static str = "kf";
    const KEY: &'static str = "name";
    type Raw = RawKfAccount;

    fn from_raw(raw: RawKfAccount, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        let name = keep(p, check_name(at("name"), &raw.name));
        let corp_id = keep(p, check_id(at("corp_id"), &raw.corp_id));
        let open_kfid = keep(p, check_id(at("open_kfid"), &raw.open_kfid));
        let app = keep(p, check_name(at("app"), &raw.app));
        let horizon = raw.history_horizon_s.unwrap_or(DEFAULT_HISTORY_HORIZON_S);
        let horizon = keep(
            p,
            if horizon <= MAX_HISTORY_HORIZON_S {
                Ok(horizon)
            } else {
                Err(invalid(at("history_horizon_s"), "must be at most 259200 (the three days WeChat keeps)"))
            },
        );
        let welcome = match raw.welcome {
            Some(w) if w.trim().is_empty() || w.len() > MAX_WELCOME_BYTES => {
                p.push(invalid(at("welcome"), "must be 1-2048 bytes of text"));
                None
            }
            other => other,
        };
        Some(KfAccount {
            name: name?,
            corp_id: corp_id?,
            open_kfid: open_kfid?,
            app: app?,
            welcome,
            history_horizon_s: horizon?,
        })
    }

    fn key(&self) -> &str {
        &self.name
    }
}

impl KfAccount {
    /// The WeCom app serving this account, and its secret (`None` without one).
    pub fn serving_app<'a>(
        &self,
        apps: &'a [crate::channels::wecom::WecomApp],
    ) -> Option<(&'a crate::channels::wecom::WecomApp, secrecy::SecretString)> {
        let app = apps.iter().find(|a| a.app == self.app)?;
        Some((app, app.secret.clone()?))
    }

    /// The state key prefix of this account: per corp and `open_kfid`, so a renamed account
    /// keeps its cursor and dedupe markers.
    pub fn state_key(&self) -> String {
        format!("{}:{}", self.corp_id, self.open_kfid)
    }
}

#[cfg(test)]
mod tests {
    use crate::channels::Config;

    const APP: &str = r#"{"app": "hr", "corp_id": "ww1", "agent_id": 1, "token": "abcdef", "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "secret": "s"}"#;

    #[test]
    fn a_kf_account_needs_its_app_with_the_same_corp_and_a_secret() {
        let ok = format!(
            r#"{{"wecom": [{APP}], "kf": [{{"name": "support", "corp_id": "ww1", "open_kfid": "wk1", "app": "hr"}}]}}"#
        );
        let config = Config::parse(&ok).unwrap();
        assert_eq!(config.kf[0].history_horizon_s, super::DEFAULT_HISTORY_HORIZON_S);
        for (kf, problem) in [
            (r#"{"name": "s", "corp_id": "ww1", "open_kfid": "wk1", "app": "nope"}"#, "kf[0].app"),
            (r#"{"name": "s", "corp_id": "ww2", "open_kfid": "wk1", "app": "hr"}"#, "kf[0].corp_id"),
            (
                r#"{"name": "s", "corp_id": "ww1", "open_kfid": "wk1", "app": "hr", "history_horizon_s": 300000}"#,
                "kf[0].history_horizon_s",
            ),
            (r#"{"name": "s", "corp_id": "ww1", "open_kfid": "wk1", "app": "hr", "welcome": " "}"#, "kf[0].welcome"),
        ] {
            let doc = format!(r#"{{"wecom": [{APP}], "kf": [{kf}]}}"#);
            let err = Config::parse(&doc).unwrap_err().to_string();
            assert!(err.contains(problem), "{kf}: {err}");
        }
    }
}
