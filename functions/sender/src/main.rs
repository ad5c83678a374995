//! Lambda entry point: wires configuration, AWS clients and the HTTP client once.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::core::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let env = Env::from_process();
    let sdk = shared::adapters::aws::sdk_config().await;
    let config = shared::adapters::aws::load_config(&env, &sdk).await?;
    let sender = sender::build(config, &env, &sdk)?;
    let sender = &sender;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(sender::handle(sender, event.payload, event.context.deadline).await)
    }))
    .await
}
