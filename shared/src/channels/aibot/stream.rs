//! Where an AI-bot message's answer stream lives and how much it holds.

/// The most a stream answer (and a `response_url` markdown) may carry, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 20_480;

/// The stream of the message with Inbound id `inbound_id` to bot `bot`: its item key and the id
/// WeCom sees. Derived, so every delivery of a message names the same stream and the dispatcher
/// finds it from the Inbound alone.
pub fn stream_key(bot: &str, inbound_id: &str) -> (String, String) {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(inbound_id.as_bytes());
    let id: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    (format!("{bot}#{id}"), id)
}
