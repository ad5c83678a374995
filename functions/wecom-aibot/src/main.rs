//! Lambda entry point: wires configuration and AWS clients once, then serves requests.

use lambda_http::{run, service_fn, Error};
use shared::core::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let env = Env::from_process();
    let sdk = shared::adapters::aws::sdk_config().await;
    let config = shared::adapters::aws::load_config(&env, &sdk).await?;
    let service = wecom_aibot::build(&config, &env, &sdk)?;
    let service = &service;
    run(service_fn(move |req| async move { Ok::<_, Error>(wecom_aibot::handle(service, req).await) })).await
}
