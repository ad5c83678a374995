//! Where the CLI's configuration comes from: `--config`, else `WXBRIDGE_CONFIG`, else the
//! built-in demo app (so `wxbridge dev` works on a fresh clone with no accounts at all).

use std::path::PathBuf;

use shared::channels::Config;
use shared::core::config::{ConfigError, Env};

/// The demo configuration: a WeCom app and an Official Account named `demo`, an AI bot `ops`, an
/// iLink bot, a 微信客服 account `support`, and a streaming echo for the AI bot and the Official
/// Account, with made-up credentials that only the sandbox accepts.
pub const DEMO_CONFIG: &str = include_str!("../../examples/dev-config.json");

/// A loaded configuration and where it came from, for the banner.
pub struct Loaded {
    pub config: Config,
    pub origin: String,
    /// The built-in demo (no config given): its credentials are made up, so dev runs the sandbox.
    pub demo: bool,
}

pub fn load(flag: Option<PathBuf>, env: &Env) -> Result<Loaded, ConfigError> {
    match flag.or_else(|| env.config_file.clone()) {
        Some(path) => Ok(Loaded { config: Config::from_file(&path)?, origin: path.display().to_string(), demo: false }),
        None => Ok(Loaded {
            config: Config::parse(DEMO_CONFIG)?,
            origin: "built-in demo (examples/dev-config.json)".to_owned(),
            demo: true,
        }),
    }
}
