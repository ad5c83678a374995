//! WeCom group robots: a webhook per group, send only (no callback).

pub mod api;
pub mod config;
pub mod outbound;

pub use config::Robot;
