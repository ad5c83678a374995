//! The table handle, the one conditional-update helper and the value helpers every adapter
//! shares.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::core::ports::PortError;

/// The bridge's table and the one client a function lends to every adapter.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) name: String,
}

impl Table {
    pub fn new(client: aws_sdk_dynamodb::Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    /// The table with a new client built from the SDK configuration (once per process).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, name: impl Into<String>) -> Self {
        Self::new(aws_sdk_dynamodb::Client::new(sdk), name)
    }
}

/// The item `pk`, read consistently (after a conditional write, the latest state).
pub(crate) async fn get(
    table: &Table,
    pk: AttributeValue,
) -> Result<Option<HashMap<String, AttributeValue>>, PortError> {
    let out = table
        .client
        .get_item()
        .table_name(&table.name)
        .key("pk", pk)
        .consistent_read(true)
        .send()
        .await
        .map_err(port_error)?;
    Ok(out.item)
}

/// One conditional update of the item `pk`: every `#name` in the expressions stands for the
/// attribute `name` (several are reserved words). True when it applied, false when `condition`
/// failed.
pub(crate) async fn update_if(
    table: &Table,
    pk: AttributeValue,
    expression: &str,
    condition: Option<&str>,
    values: &[(&str, AttributeValue)],
) -> Result<bool, PortError> {
    let mut request = table.client.update_item().table_name(&table.name).key("pk", pk).update_expression(expression);
    if let Some(condition) = condition {
        request = request.condition_expression(condition);
    }
    let mut names: HashMap<String, String> = HashMap::new();
    for text in [Some(expression), condition].into_iter().flatten() {
        for (i, _) in text.match_indices('#') {
            let name: String = text[i + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            names.insert(format!("#{name}"), name);
        }
    }
    for (placeholder, name) in names {
        request = request.expression_attribute_names(placeholder, name);
    }
    for (name, value) in values {
        request = request.expression_attribute_values(*name, value.clone());
    }
    applied(request.send().await)
}

pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(crate) fn port_error<E: std::error::Error + 'static, R: std::fmt::Debug>(err: SdkError<E, R>) -> PortError {
    PortError::new("dynamodb", DisplayErrorContext(&err))
}

/// A conditional write's outcome: true when it applied, false when its condition failed.
pub(crate) fn applied<O, E, R>(result: Result<O, SdkError<E, R>>) -> Result<bool, PortError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if is_condition_failure(&err) => Ok(false),
        Err(err) => Err(port_error(err)),
    }
}

/// True when the error is a failed condition (someone else holds or finished the marker).
pub(crate) fn is_condition_failure<E, R>(err: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}
