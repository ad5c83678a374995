//! The CLI as a user drives it: start `wxbridge dev`, send a callback with `wxbridge simulate`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_wxbridge");

/// A running `wxbridge dev`, killed on drop; its stdout lines arrive on `lines`.
struct Dev {
    child: Child,
    url: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(extra: &[&str], envs: &[(&str, String)]) -> Dev {
    let mut command = Command::new(BIN);
    command.args(["dev", "--listen", "127.0.0.1:0"]).args(extra).stdout(Stdio::piped()).stderr(Stdio::null());
    command.env_remove("WXBRIDGE_CONFIG");
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start wxbridge dev");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(20)).expect("dev prints its address");
    let url = first.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{first}");
    Dev { child, url, lines }
}

fn simulate(url: &str, text: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["simulate", "wecom", "--text", text, "--url", url])
        .env_remove("WXBRIDGE_CONFIG")
        .output()
        .expect("run wxbridge simulate")
}

fn wait_for_line(dev: &Dev, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match dev.lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("wxbridge dev never printed {needle:?}");
}

#[test]
fn simulate_sends_a_callback_that_dev_publishes() {
    let dev = start_dev(&[], &[]);
    let out = simulate(&dev.url, "hello 你好 🚀");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("200 OK"), "{stdout}");
    let line = wait_for_line(&dev, "inbound queue ←");
    assert!(line.contains("\"hello 你好 🚀\"") && line.contains("wecom:demo:"), "{line}");
}

#[test]
fn simulate_fails_clearly_when_nothing_listens_or_the_app_is_unknown() {
    let out = simulate("http://127.0.0.1:9", "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `wxbridge dev` running?"));
    let out = Command::new(BIN)
        .args(["simulate", "wecom", "--app", "nope", "--text", "x"])
        .env_remove("WXBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no WeCom app named 'nope'"));
}

#[test]
fn dev_refuses_a_broken_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"wecom": [{"app": "hr", "corp_id": "ww1", "agent_id": 1, "token": "abc", "encoding_aes_key": "tooshort"}]}"#).unwrap();
    let out = Command::new(BIN).args(["dev", "--listen", "127.0.0.1:0", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wecom[0].encoding_aes_key"), "{stderr}");
    assert!(!stderr.contains("tooshort"), "{stderr}");
}

/// `dev --aws` publishes to the SQS queue named by the environment (the emulator in tests).
#[test]
fn dev_with_aws_publishes_to_the_configured_sqs_queue() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests with scripts/test (it starts the local AWS stack)");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let prefix = format!("cli-{}", &shared::ports::claim_token()[..10]);
    let names = shared::aws::resources::ResourceNames::new(&prefix);
    let (sqs, urls) = runtime.block_on(async {
        let sdk = shared::aws::sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let urls = shared::aws::resources::create_all(&dynamodb, &sqs, &names).await.unwrap();
        (sqs, urls)
    });
    let dev = start_dev(
        &["--aws"],
        &[
            ("WXBRIDGE_TABLE", names.table.clone()),
            ("WXBRIDGE_INBOUND_QUEUE_URL", urls.inbound.clone()),
            ("AWS_ENDPOINT_URL", endpoint),
        ],
    );
    let out = simulate(&dev.url, "via sqs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bodies: Vec<String> = runtime.block_on(async {
        let received = sqs
            .receive_message()
            .queue_url(&urls.inbound)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        received.messages().iter().filter_map(|m| m.body().map(str::to_owned)).collect()
    });
    assert_eq!(bodies.len(), 1);
    assert!(bodies[0].contains("\"text\":\"via sqs\""), "{}", bodies[0]);
}
