//! Lambda entry point: wires configuration, the media store and AWS clients once.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::core::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_process();
    let sdk = shared::adapters::aws::sdk_config().await;
    let config = shared::adapters::aws::load_config(&env, &sdk).await?;
    let service = media::build(&config, &env, &sdk)?;
    let service = &service;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(media::handle(service, event.payload, event.context.deadline).await)
    }))
    .await
}
