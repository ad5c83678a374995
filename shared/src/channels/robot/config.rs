//! The `robots` config section: WeCom group robots (webhooks).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::core::config::{check_name, invalid, keep, ConfigError, ListSection};

/// A WeCom group robot (webhook).
#[derive(Debug, Clone)]
pub struct Robot {
    pub name: String,
    pub key: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRobot {
    name: String,
    key: SecretString,
}

impl ListSection for Robot {
    const NAME: &'static str = "robots";
    const KEY: &'static str = "name";
    type Raw = RawRobot;

    fn from_raw(raw: RawRobot, at: &dyn Fn(&str) -> String, p: &mut Vec<ConfigError>) -> Option<Self> {
        if raw.key.expose_secret().is_empty() {
            p.push(invalid(at("key"), "must not be empty"));
        }
        let name = keep(p, check_name(at("name"), &raw.name))?;
        Some(Robot { name, key: raw.key })
    }

    fn key(&self) -> &str {
        &self.name
    }
}
