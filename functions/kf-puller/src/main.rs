//! Lambda entry point: wires configuration and AWS clients once.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::core::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_process();
    let sdk = shared::adapters::aws::sdk_config().await;
    let config = shared::adapters::aws::load_config(&env, &sdk).await?;
    let puller = kf_puller::build(&config, &env, &sdk)?;
    let puller = &puller;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(kf_puller::handle(puller, event.payload).await)
    }))
    .await
}
