//! Black-box tests of `FakeWechat` over real HTTP with reqwest: each check rejects what it should,
//! a well-formed request is accepted, and each fault kind does what it says. `aibot_wecom` tests the
//! other direction: `AibotWecom` calling a bridge stand-in.
//!
//! One test binary (modules below) so the suite links once.

mod aibot;
mod aibot_wecom;
mod faults;
mod ilink;
mod ilink_upload;
mod media;
mod oa;
mod robot;
mod support;
mod uploads;
mod wecom;
