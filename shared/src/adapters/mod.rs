//! The ports' implementations: AWS (DynamoDB, SQS, Secrets Manager), in-memory twins, the
//! Lambda glue and metrics.

pub mod memory;
pub mod metrics;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "lambda")]
pub mod lambda;
