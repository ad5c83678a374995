//! Per-account rules for who reaches which bot: the fields `bot`, `group_bots` and `allow` on
//! any receiving account (`wecom`, `oa`, `aibots`, `kf`, `ilink`), taken out of the account's
//! element before the channel reads it, so every channel gets them the same way.
//!
//! ```json
//! {"app": "hr", …, "bot": "support", "group_bots": {"wrkSFf…": "ops"},
//!  "allow": {"users": ["zhangsan"], "groups": ["wrkSFf…"], "chats": "groups", "refusal": "…"}}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::core::config::{deserialize_at, invalid, ConfigError, Document};
use crate::core::envelope::{Channel, ConversationKind, Inbound};

/// The receiving sections, the field that names their accounts, and their channel.
const SECTIONS: [(&str, &str, Channel); 5] = [
    ("wecom", "app", Channel::Wecom),
    ("oa", "app", Channel::Oa),
    ("aibots", "name", Channel::WecomAibot),
    ("kf", "name", Channel::WecomKf),
    ("ilink", "account", Channel::Ilink),
];
const FIELDS: [&str; 3] = ["bot", "group_bots", "allow"];

/// Which chats of an account may reach the bot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chats {
    #[default]
    All,
    /// Group chats only (an AI bot kept out of direct chats).
    Groups,
    /// Direct chats only.
    Direct,
}

/// Who may talk to an account's bot. An absent list lets everyone in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// Sender ids (user ids, open ids, external user ids, iLink ids) who may write.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Group chat ids whose messages reach the bot (anyone in them).
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub chats: Chats,
    /// What a refused sender is told; absent: nothing (the refusal is silent).
    #[serde(default)]
    pub refusal: Option<String>,
}

/// Why a message may not reach the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A group chat where the account answers direct chats only, or the reverse.
    ChatKind,
    /// A group not on the list.
    Group,
    /// A sender not on the list.
    User,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ChatKind => "chat_kind",
            Refusal::Group => "group",
            Refusal::User => "user",
        }
    }
}

impl Allow {
    /// Whether `inbound` may reach the bot. In a group on the `groups` list anyone may write;
    /// elsewhere the sender must be on `users` (when there is such a list).
    pub fn check(&self, inbound: &Inbound) -> Result<(), Refusal> {
        let group = inbound.conversation.kind == ConversationKind::Group;
        match (self.chats, group) {
            (Chats::Groups, false) | (Chats::Direct, true) => return Err(Refusal::ChatKind),
            _ => {}
        }
        if group {
            if let Some(groups) = &self.groups {
                if groups.contains(&inbound.conversation.id) {
                    return Ok(());
                }
                if self.users.is_none() {
                    return Err(Refusal::Group);
                }
            }
        }
        match &self.users {
            Some(users) if !users.contains(&inbound.sender.id) => Err(Refusal::User),
            _ => Ok(()),
        }
    }
}

/// One account's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The bot that answers the account (a name in `bots`); absent: the default.
    #[serde(default)]
    pub bot: Option<String>,
    /// Per group chat id, the bot that answers there.
    #[serde(default)]
    pub group_bots: BTreeMap<String, String>,
    #[serde(default)]
    pub allow: Allow,
}

impl Policy {
    /// The bot for `inbound`: its group's, else the account's, else none (the default).
    pub fn bot_for(&self, inbound: &Inbound) -> Option<&str> {
        let group = (inbound.conversation.kind == ConversationKind::Group)
            .then(|| self.group_bots.get(&inbound.conversation.id))
            .flatten();
        group.or(self.bot.as_ref()).map(String::as_str)
    }
}

/// Every account's rules, by channel and account name.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_account: Vec<(Channel, String, Policy)>,
}

impl Policies {
    /// Takes the rule fields out of every receiving account of `doc` (call before the sections
    /// are read).
    pub fn take(doc: &mut Document) -> Self {
        let mut by_account = Vec::new();
        for (section, key, channel) in SECTIONS {
            for (i, name, fields) in doc.take_fields(section, key, &FIELDS) {
                let mut problems = Vec::new();
                let policy: Option<Policy> =
                    deserialize_at(&format!("{section}[{i}]"), serde_json::Value::Object(fields), &mut problems);
                for problem in problems {
                    doc.problem(problem);
                }
                if let Some(policy) = policy {
                    by_account.push((channel, name, policy));
                }
            }
        }
        Self { by_account }
    }

    /// The rules of `inbound`'s account (the defaults when it has none).
    pub fn of(&self, inbound: &Inbound) -> &Policy {
        static NONE: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        self.by_account
            .iter()
            .find(|(channel, name, _)| *channel == inbound.channel && *name == inbound.account)
            .map(|(_, _, policy)| policy)
            .unwrap_or_else(|| NONE.get_or_init(Policy::default))
    }

    /// Every bot name the rules use, with where, for checking against `bots`.
    pub fn bot_names(&self) -> Vec<(String, String)> {
        let mut names = Vec::new();
        for (channel, account, policy) in &self.by_account {
            let at = format!("{}:{account}", channel.as_str());
            names.extend(policy.bot.iter().map(|bot| (format!("{at}.bot"), bot.clone())));
            names
                .extend(policy.group_bots.iter().map(|(group, bot)| (format!("{at}.group_bots.{group}"), bot.clone())));
        }
        names
    }

    /// Problems with the rules: a bot name `bots` does not have.
    pub fn check(&self, has_bot: impl Fn(&str) -> bool) -> Vec<ConfigError> {
        self.bot_names()
            .into_iter()
            .filter(|(_, bot)| !has_bot(bot))
            .map(|(at, bot)| invalid(at, format!("names no bot of the bots section ('{bot}')")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envelope::{Conversation, Sender};

    fn inbound(group: bool, chat: &str, sender: &str) -> Inbound {
        let mut inbound = Inbound::direct(Channel::Wecom, "hr", "id".into(), sender, 1, 1, serde_json::Value::Null);
        if group {
            inbound.conversation = Conversation { kind: ConversationKind::Group, id: chat.into() };
        }
        inbound.sender = Sender { id: sender.into() };
        inbound
    }

    #[test]
    fn an_allow_list_lets_listed_groups_and_users_in_and_keeps_chat_kinds_apart() {
        let everyone = Allow::default();
        assert_eq!(everyone.check(&inbound(true, "g1", "u9")), Ok(()));
        let groups_only = Allow { chats: Chats::Groups, ..Allow::default() };
        assert_eq!(groups_only.check(&inbound(false, "", "u1")), Err(Refusal::ChatKind));
        let direct_only = Allow { chats: Chats::Direct, ..Allow::default() };
        assert_eq!(direct_only.check(&inbound(true, "g1", "u1")), Err(Refusal::ChatKind));
        let listed = Allow { groups: Some(vec!["g1".into()]), users: Some(vec!["u1".into()]), ..Allow::default() };
        assert_eq!(listed.check(&inbound(true, "g1", "stranger")), Ok(()), "anyone in a listed group");
        assert_eq!(listed.check(&inbound(true, "g2", "u1")), Ok(()), "a listed user elsewhere");
        assert_eq!(listed.check(&inbound(true, "g2", "stranger")), Err(Refusal::User));
        assert_eq!(listed.check(&inbound(false, "", "stranger")), Err(Refusal::User));
        let groups = Allow { groups: Some(vec!["g1".into()]), ..Allow::default() };
        assert_eq!(groups.check(&inbound(true, "g2", "u1")), Err(Refusal::Group));
        assert_eq!(groups.check(&inbound(false, "", "u1")), Ok(()), "direct chats are not limited by groups");
    }

    #[test]
    fn a_group_bot_comes_before_the_accounts_bot() {
        let policy = Policy {
            bot: Some("support".into()),
            group_bots: [("g1".to_owned(), "ops".to_owned())].into(),
            ..Policy::default()
        };
        assert_eq!(policy.bot_for(&inbound(true, "g1", "u")), Some("ops"));
        assert_eq!(policy.bot_for(&inbound(true, "g2", "u")), Some("support"));
        assert_eq!(policy.bot_for(&inbound(false, "", "u")), Some("support"));
        assert_eq!(Policy::default().bot_for(&inbound(false, "", "u")), None);
    }
}
