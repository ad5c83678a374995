//! The ports' implementations: AWS (DynamoDB, SQS, S3, Secrets Manager), in-memory twins, a media folder, the
//! Lambda glue and metrics.

pub mod folder;
pub mod memory;
pub mod metrics;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "lambda")]
pub mod lambda;
