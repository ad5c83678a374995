//! Fake WeChat API servers for tests and the local sandbox.
