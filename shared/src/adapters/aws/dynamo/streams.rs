//! AI-bot answer streams: `pk = stream#<key>` with `content`, `finished`, `handed_over`,
//! `version`, `opened_ms`, the message's `response_url` (`url`, `url_state`, `url_expires_ms`)
//! and, once the bot answered, `answer` (what the stream does not show) and `images` (the
//! answer's images: media store keys).

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::table::{applied, get, n, s, update_if, Table};
use crate::core::ports::{unix_millis, PortError, Stream, Streams, UrlClaim, UrlState, STREAM_TTL};

/// Streams in the bridge's table.
#[derive(Debug, Clone)]
pub struct DynamoStreams {
    table: Table,
}

impl DynamoStreams {
    pub fn new(table: &Table) -> Self {
        Self { table: table.clone() }
    }

    fn pk(key: &str) -> AttributeValue {
        AttributeValue::S(format!("stream#{key}"))
    }

    fn stream(item: &HashMap<String, AttributeValue>) -> Option<Stream> {
        let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let flag = |name: &str| item.get(name).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
        let url = match item.get("url_state").and_then(|v| v.as_s().ok()).map(String::as_str) {
            Some("unused") => UrlState::Unused,
            Some("claimed") => UrlState::Claimed,
            Some("used") => UrlState::Used,
            _ => UrlState::None,
        };
        Some(Stream {
            content: item.get("content").and_then(|v| v.as_s().ok()).cloned().unwrap_or_default(),
            finished: flag("finished"),
            handed_over: flag("handed_over"),
            version: number("version").unwrap_or(0),
            opened_ms: number("opened_ms")?,
            url,
            answer: item.get("answer").and_then(|v| v.as_s().ok()).cloned(),
            images: item
                .get("images")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default(),
        })
    }
}

#[async_trait]
impl Streams for DynamoStreams {
    async fn open(
        &self,
        key: &str,
        opened: SystemTime,
        response_url: Option<&str>,
        url_expires: SystemTime,
    ) -> Result<bool, PortError> {
        let opened_ms = unix_millis(opened);
        let mut put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", Self::pk(key))
            .item("content", s(""))
            .item("finished", AttributeValue::Bool(false))
            .item("version", n(0))
            .item("opened_ms", n(opened_ms))
            .item("expires_at", n(opened_ms / 1000 + STREAM_TTL.as_secs()))
            .condition_expression("attribute_not_exists(pk)");
        put = match response_url {
            Some(url) => put
                .item("url", s(url))
                .item("url_state", s("unused"))
                .item("url_expires_ms", n(unix_millis(url_expires))),
            None => put.item("url_state", s("none")),
        };
        // An existing stream (a retried callback) stays as it is.
        applied(put.send().await)
    }

    async fn read(&self, key: &str) -> Result<Option<Stream>, PortError> {
        Ok(get(&self.table, Self::pk(key)).await?.as_ref().and_then(Self::stream))
    }

    async fn write(&self, key: &str, content: &str, version: u64, finish: bool) -> Result<bool, PortError> {
        let values = [
            (":content", s(content)),
            (":version", n(version)),
            (":finish", AttributeValue::Bool(finish)),
            (":no", AttributeValue::Bool(false)),
        ];
        update_if(
            &self.table,
            Self::pk(key),
            "SET content = :content, version = :version, finished = :finish",
            Some("attribute_exists(pk) AND finished = :no AND version < :version"),
            &values,
        )
        .await
    }

    async fn finish(
        &self,
        key: &str,
        content: &str,
        version: u64,
        rest: &str,
        images: &[String],
    ) -> Result<bool, PortError> {
        let values = [
            (":content", s(content)),
            (":version", n(version)),
            (":yes", AttributeValue::Bool(true)),
            (":no", AttributeValue::Bool(false)),
            (":answer", s(rest)),
            (":images", AttributeValue::L(images.iter().map(|k| s(k)).collect())),
        ];
        update_if(
            &self.table,
            Self::pk(key),
            "SET content = :content, version = :version, finished = :yes, answer = :answer, images = :images",
            Some("attribute_exists(pk) AND finished = :no AND version < :version AND attribute_not_exists(answer)"),
            &values,
        )
        .await
    }

    async fn record_answer(&self, key: &str, rest: &str) -> Result<bool, PortError> {
        update_if(
            &self.table,
            Self::pk(key),
            "SET answer = :answer",
            Some("attribute_exists(pk) AND finished = :yes AND attribute_not_exists(answer)"),
            &[(":answer", s(rest)), (":yes", AttributeValue::Bool(true))],
        )
        .await
    }

    async fn hand_over(&self, key: &str, content: &str) -> Result<bool, PortError> {
        let values =
            [(":content", s(content)), (":yes", AttributeValue::Bool(true)), (":no", AttributeValue::Bool(false))];
        update_if(
            &self.table,
            Self::pk(key),
            "SET content = :content, finished = :yes, handed_over = :yes",
            Some("attribute_exists(pk) AND finished = :no"),
            &values,
        )
        .await
    }

    async fn claim_url(&self, key: &str, now: SystemTime) -> Result<UrlClaim, PortError> {
        let out = self
            .table
            .client
            .update_item()
            .table_name(&self.table.name)
            .key("pk", Self::pk(key))
            .update_expression("SET url_state = :claimed")
            .condition_expression("url_state = :unused AND url_expires_ms > :now")
            .expression_attribute_values(":claimed", s("claimed"))
            .expression_attribute_values(":unused", s("unused"))
            .expression_attribute_values(":now", n(unix_millis(now)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => {
                let url = out.attributes().and_then(|item| item.get("url")).and_then(|v| v.as_s().ok()).cloned();
                Ok(url.map(UrlClaim::Claimed).unwrap_or(UrlClaim::Missing))
            }
            Err(err) if super::table::is_condition_failure(&err) => {
                // Why not: one more read tells (rare: the answer outlived the stream).
                Ok(match self.read(key).await?.map(|stream| stream.url) {
                    None | Some(UrlState::None) => UrlClaim::Missing,
                    Some(UrlState::Unused) => UrlClaim::Expired,
                    Some(UrlState::Claimed | UrlState::Used) => UrlClaim::Used,
                })
            }
            Err(err) => Err(super::table::port_error(err)),
        }
    }

    async fn settle_url(&self, key: &str, used: bool) -> Result<(), PortError> {
        let values = [(":claimed", s("claimed")), (":state", s(if used { "used" } else { "unused" }))];
        update_if(&self.table, Self::pk(key), "SET url_state = :state", Some("url_state = :claimed"), &values)
            .await
            .map(drop)
    }
}
