//! `wxbridge`: run and exercise the bridge on one machine.

mod chat;
mod check;
mod dev;
mod feed;
mod ids;
mod ilink;
mod kf;
mod media;
mod outbound;
mod sandbox;
mod send;
mod settings;
mod simulate;
mod sqs;
mod trace;
mod ui;

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "wxbridge", version, about = "Connect bots and AI agents to WeChat")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bridge locally, serving the same routes as API Gateway.
    Dev(dev::DevArgs),
    /// Play WeChat: send a real signed, encrypted callback to a running bridge, show the answer.
    Simulate(simulate::SimulateArgs),
    /// iLink bots (personal WeChat): log a bot in by QR code.
    Ilink(ilink::IlinkArgs),
    /// Queue an Outbound text, as a bot would (on dev's queue or an SQS queue).
    Send(send::SendArgs),
    /// Validate a config and the environment; say which channels are ready.
    Check(check::CheckArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The commands print what matters; RUST_LOG=info shows the functions' logs too.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Ilink(args) => ilink::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Check(args) => check::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
