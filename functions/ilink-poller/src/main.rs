//! Lambda entry point: a scheduled (EventBridge) invocation polls every configured iLink bot.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::core::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_process();
    let sdk = shared::adapters::aws::sdk_config().await;
    let config = shared::adapters::aws::load_config(&env, &sdk).await?;
    let poller = ilink_poller::build(&env, &sdk)?;
    let (poller, accounts) = (&poller, &config.ilink);
    run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        Ok::<_, Error>(ilink_poller::handle(poller, accounts, event.context.deadline).await)
    }))
    .await
}
