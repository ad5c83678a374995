//! Where an AI-bot message's answer stream lives and how much it holds.

/// The most a stream answer (and a `response_url` markdown) may carry, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 20_480;

/// What ends an answer cut to [`MAX_CONTENT_BYTES`].
pub const CUT_NOTE: &str = "\n\n（回答过长，后面的部分未能发送。）";

/// `text` as one AI-bot message takes it: whole when it fits, else cut on a character boundary
/// and ended with [`CUT_NOTE`].
pub fn fit(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_CONTENT_BYTES {
        return text.into();
    }
    format!("{}{CUT_NOTE}", crate::core::ports::cut_utf8(text, MAX_CONTENT_BYTES - CUT_NOTE.len())).into()
}

/// The most images a finished stream shows (`msg_item`, WeCom's limit).
pub const MAX_IMAGES: usize = 10;
/// The largest image WeCom shows in a stream (before base64).
pub const MAX_IMAGE_BYTES: u64 = 10 * 1024 * 1024;
/// The images of one answer together, in bytes: the refresh answer carries them base64-encoded
/// inside encrypted, base64-encoded JSON (×16/9), and a Lambda response is at most 6 MB.
pub const MAX_IMAGES_TOTAL_BYTES: u64 = 3 * 1024 * 1024;

/// The stream of the message with Inbound id `inbound_id` to bot `bot`: its item key and the id
/// WeCom sees. Derived, so every delivery of a message names the same stream and the dispatcher
/// finds it from the Inbound alone.
pub fn stream_key(bot: &str, inbound_id: &str) -> (String, String) {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(inbound_id.as_bytes());
    let id = crate::protocol::hex::hex(&digest[..16]);
    (format!("{bot}#{id}"), id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_fits_is_whole_and_a_longer_one_is_cut_with_a_note() {
        let short = "好".repeat(MAX_CONTENT_BYTES / 3);
        assert_eq!(fit(&short), short.as_str());
        let long = "好".repeat(MAX_CONTENT_BYTES);
        let cut = fit(&long);
        assert!(cut.len() <= MAX_CONTENT_BYTES, "{}", cut.len());
        assert!(cut.ends_with(CUT_NOTE));
        assert!(long.starts_with(cut.trim_end_matches(CUT_NOTE)));
    }

    #[test]
    fn every_delivery_of_a_message_names_the_same_stream_and_bots_do_not_share_one() {
        assert_eq!(stream_key("ops", "wecom_aibot:ops:m1"), stream_key("ops", "wecom_aibot:ops:m1"));
        assert_ne!(stream_key("ops", "wecom_aibot:ops:m1").0, stream_key("dev", "wecom_aibot:ops:m1").0);
        assert_ne!(stream_key("ops", "wecom_aibot:ops:m1").1, stream_key("ops", "wecom_aibot:ops:m2").1);
        assert_eq!(stream_key("ops", "x").1.len(), 32);
    }
}
