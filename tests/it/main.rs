//! Cross-crate integration tests against a real DynamoDB/SQS endpoint on 127.0.0.1 (the local
//! stack that `scripts/test` starts).

mod aibot;
mod api;
mod bots;
mod crash;
mod dedupe;
mod dify;
mod ilink;
mod kf;
mod media;
mod media_out_ilink;
mod oa;
mod order;
mod resources;
mod router;
mod sender;
mod support;
mod wecom_callback;
