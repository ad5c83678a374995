//! One folder per WeChat product.

pub mod ilink;
pub mod oa;
pub mod wecom;
