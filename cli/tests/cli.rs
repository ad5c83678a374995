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
    let banner = loop {
        let line = lines.recv_timeout(Duration::from_secs(20)).expect("dev prints its address");
        if line.starts_with("wxbridge dev listening on ") {
            break line;
        }
    };
    let url = banner.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{banner}");
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

/// The demo config with a secret for sending and an Official Account, written to a temp dir.
fn loop_config(dir: &std::path::Path) -> std::path::PathBuf {
    let mut config: serde_json::Value = serde_json::from_str(&demo_without_ilink()).unwrap();
    config["wecom"][0]["secret"] = "demo-secret".into();
    config["oa"] = serde_json::json!([{"app": "news", "app_id": "wxdemo0000000001", "token": "oaDemoToken"}]);
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn fake_wecom(runtime: &tokio::runtime::Runtime) -> fakes::FakeWechat {
    let fake = runtime.block_on(fakes::FakeWechat::start());
    fake.add_wecom_app("wwdemo00000000001", "demo-secret", 1_000_002);
    fake.add_wecom_user("WangFang");
    fake
}

fn wait_for_delivery(fake: &fakes::FakeWechat) -> Vec<fakes::Delivery> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while fake.deliveries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    fake.deliveries()
}

/// The whole WeCom loop in memory: callback → inbound → echo bot → outbound → sender → WeCom.
#[test]
fn dev_answers_a_wecom_message_through_the_echo_bot() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = fake_wecom(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(dir.path());
    let dev = start_dev(&["--config", config.to_str().unwrap()], &[("WXBRIDGE_WECOM_API_BASE", fake.base_url.clone())]);
    let out = Command::new(BIN)
        .args(["simulate", "wecom", "--text", "echo me", "--url", &dev.url, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deliveries = wait_for_delivery(&fake);
    assert_eq!(deliveries.len(), 1, "{:?}", fake.problems());
    assert_eq!(deliveries[0].body["text"]["content"], "echo me");
    assert_eq!(deliveries[0].body["touser"], "WangFang");
}

/// An Official Account message gets the echo as its passive reply, inside the window.
#[test]
fn dev_answers_an_official_account_message_passively() {
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(dir.path());
    let dev = start_dev(&["--config", config.to_str().unwrap()], &[]);
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let signature = shared::protocol::crypto::plain_signature("oaDemoToken", &ts, "42");
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_demo]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好]]></Content><MsgId>77</MsgId></xml>"
    );
    let url = format!("{}/oa/news?signature={signature}&timestamp={ts}&nonce=42&openid=oUser1", dev.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    let (status, reply) = runtime.block_on(post(&url, body));
    assert_eq!(status, 200, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered inside WeChat's window");
    let fields = shared::protocol::xml::parse(&reply).unwrap();
    assert_eq!(fields.text("Content"), Some("你好"));
    assert_eq!(fields.text("ToUserName"), Some("oUser1"));
    assert_eq!(fields.text("FromUserName"), Some("gh_demo"));
}

/// `wxbridge dev --aws` on fresh resources of the local emulator, sending to `fake`.
fn dev_on_the_emulator(runtime: &tokio::runtime::Runtime, fake: &fakes::FakeWechat, config: &std::path::Path) -> Dev {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests with scripts/test (it starts the local AWS stack)");
    let prefix = format!("cli-{}", &shared::core::ports::claim_token()[..10]);
    let names = shared::adapters::aws::resources::ResourceNames::new(&prefix);
    let urls = runtime.block_on(async {
        let sdk = shared::adapters::aws::sdk_config().await;
        shared::adapters::aws::resources::create_all(
            &aws_sdk_dynamodb::Client::new(&sdk),
            &aws_sdk_sqs::Client::new(&sdk),
            &names,
        )
        .await
        .unwrap()
    });
    start_dev(
        &["--aws", "--config", config.to_str().unwrap()],
        &[
            ("WXBRIDGE_TABLE", names.table.clone()),
            ("WXBRIDGE_INBOUND_QUEUE_URL", urls.inbound.clone()),
            ("WXBRIDGE_OUTBOUND_QUEUE_URL", urls.outbound.clone()),
            ("WXBRIDGE_DLQ_URL", urls.outbound_dlq.clone()),
            ("WXBRIDGE_WECOM_API_BASE", fake.base_url.clone()),
            ("AWS_ENDPOINT_URL", endpoint),
        ],
    )
}

/// The same loop through the SQS queues and DynamoDB of the emulator, as deployed.
#[test]
fn dev_with_aws_runs_the_loop_through_the_queues() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = fake_wecom(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(dir.path());
    let dev = dev_on_the_emulator(&runtime, &fake, &config);
    let out = Command::new(BIN)
        .args(["simulate", "wecom", "--text", "via sqs", "--url", &dev.url, "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deliveries = wait_for_delivery(&fake);
    assert_eq!(deliveries.len(), 1, "{:?}", fake.problems());
    assert_eq!(deliveries[0].body["text"]["content"], "via sqs");
}

/// With an API host overridden, dev names the hosts its sends go to instead of claiming WeChat.
#[test]
fn dev_names_the_api_hosts_it_sends_to() {
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(dir.path());
    let dev = start_dev(
        &["--config", config.to_str().unwrap()],
        &[("WXBRIDGE_WECOM_API_BASE", "http://127.0.0.1:9".to_owned())],
    );
    assert!(wait_for_line(&dev, "WeChat: ").contains("sends go to"));
    let wecom = wait_for_line(&dev, "WeCom ");
    assert!(wecom.contains("http://127.0.0.1:9") && wecom.contains("WXBRIDGE_WECOM_API_BASE"), "{wecom}");
    let oa = wait_for_line(&dev, "Official Account ");
    assert!(oa.contains("https://api.weixin.qq.com") && oa.contains("WeChat's"), "{oa}");
}

/// `dev --aws` long-polls the queues; a message that arrives while the loops wait on an empty
/// queue is answered at once, never left invisible for the queue's visibility timeout by a poll
/// the client abandoned.
#[test]
fn dev_with_aws_answers_messages_that_arrive_during_long_polls_promptly() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = fake_wecom(&runtime);
    let dir = tempfile::tempdir().unwrap();
    let config = loop_config(dir.path());
    let dev = dev_on_the_emulator(&runtime, &fake, &config);
    // Messages spread over more than one long poll, each arriving while the loops wait on an
    // empty queue; each must be answered within seconds (the queues' visibility timeout is 360 s).
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(1700));
        let text = format!("arrives mid-poll {i}");
        let out = Command::new(BIN)
            .args(["simulate", "wecom", "--text", &text, "--url", &dev.url, "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let deadline = std::time::Instant::now() + Duration::from_secs(8);
        loop {
            if fake.deliveries().iter().any(|d| d.body["text"]["content"] == text.as_str()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{text:?} was not answered within 8 s: {:?}",
                fake.problems()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `dev` runs the sender: an Outbound posted to `/outbound` reaches WeCom (a fake here).
#[test]
fn dev_sends_posted_outbound_messages_through_the_sender() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    fake.add_wecom_app("wwdemo00000000001", "demo-secret", 1_000_002);
    fake.add_wecom_user("WangFang");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let demo: serde_json::Value = serde_json::from_str(&demo_without_ilink()).unwrap();
    let mut with_secret = demo.clone();
    with_secret["wecom"][0]["secret"] = "demo-secret".into();
    std::fs::write(&config, with_secret.to_string()).unwrap();

    let dev = start_dev(&["--config", config.to_str().unwrap()], &[("WXBRIDGE_WECOM_API_BASE", fake.base_url.clone())]);
    let outbound = serde_json::json!({"v": 1, "channel": "wecom_app", "account": "demo", "to": "WangFang",
        "content": {"type": "text", "text": "pong 🏓"}, "idempotency_key": "cli-1"});
    let url = format!("{}/outbound", dev.url);
    let (status, body) = runtime.block_on(post(&url, outbound.to_string()));
    assert_eq!(status, 202, "{body}");
    let (status, body) = runtime.block_on(post(&url, "{\"v\": 1}".to_owned()));
    assert_eq!(status, 400);
    assert!(body.contains("not an Outbound"), "{body}");

    let line = wait_for_line(&dev, "outbound →");
    assert!(line.contains("wecom_app sent"), "{line}");
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].body["text"]["content"], "pong 🏓");
    assert_eq!(deliveries[0].body["touser"], "WangFang");
}

/// POSTs `body` and returns the status and text.
async fn post(url: &str, body: String) -> (u16, String) {
    let response = reqwest::Client::new().post(url).body(body).send().await.expect("dev answers");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

fn ilink_login(fake: &fakes::FakeWechat, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["ilink", "login", "--base-url", &fake.base_url, "--poll-interval-ms", "10"])
        .args(extra)
        .env_remove("WXBRIDGE_ILINK_BASE_URL")
        .output()
        .expect("run wxbridge ilink login")
}

/// The login walks wait → scanned → confirmed and prints credentials the service accepts.
#[test]
fn ilink_login_follows_the_qr_code_to_confirmed_and_prints_the_credentials() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    fake.set_ilink_login("b0t1@im.bot", "owner@im.wechat");
    fake.script_ilink_login(&["wait", "wait", "scaned", "confirmed"]);
    let out = ilink_login(&fake, &["--json"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("scanned: confirm the login on the phone"), "{stderr}");
    assert!(stderr.contains("https://liteapp.weixin.qq.com/q/"), "the QR link is shown: {stderr}");
    assert!(stderr.contains('█') || stderr.contains('▀'), "the QR code is drawn: {stderr}");
    let creds: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(creds["account"], "b0t1@im.bot");
    assert_eq!(creds["base_url"], fake.base_url.as_str());
    assert_eq!(creds["user_id"], "owner@im.wechat");
    assert!(fake.ilink_token_valid(creds["bot_token"].as_str().unwrap()), "the printed token is the issued one");
    assert!(!stderr.contains(creds["bot_token"].as_str().unwrap()), "the token is not in the log");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());

    // Env lines by default.
    fake.script_ilink_login(&["confirmed"]);
    let out = ilink_login(&fake, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("WXBRIDGE_ILINK_ACCOUNT=b0t1@im.bot\n"), "{stdout}");
    assert!(stdout.contains("WXBRIDGE_ILINK_BOT_TOKEN="), "{stdout}");
    assert!(stdout.contains(&format!("WXBRIDGE_ILINK_BASE_URL={}\n", fake.base_url)), "{stdout}");
}

#[test]
fn ilink_login_gives_up_after_three_expired_codes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    fake.script_ilink_login(&["wait", "expired", "expired", "scaned", "expired"]);
    let out = ilink_login(&fake, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("3 QR codes expired"), "{stderr}");
    assert_eq!(fake.calls("/ilink/bot/get_bot_qrcode"), 3);
    assert!(out.stdout.is_empty());
}

/// The demo config without its iLink bot (whose made-up token is the sandbox's): where a first
/// login writes one, and what tests that run the demo as a real config use.
fn demo_without_ilink() -> String {
    let mut demo: serde_json::Value = serde_json::from_str(include_str!("../../examples/dev-config.json")).unwrap();
    demo.as_object_mut().unwrap().remove("ilink");
    demo.to_string()
}

/// `--config-file` writes the bot into the config (0600), and a second login by the same user
/// replaces the first bot, whose token the service revoked.
#[test]
fn ilink_login_writes_the_bot_into_a_config_file() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, demo_without_ilink()).unwrap();
    fake.set_ilink_login("first@im.bot", "owner@im.wechat");
    fake.script_ilink_login(&["scaned", "confirmed"]);
    let out = ilink_login(&fake, &["--config-file", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing secret printed when written to a file");
    fake.set_ilink_login("second@im.bot", "owner@im.wechat");
    fake.script_ilink_login(&["confirmed"]);
    let out = ilink_login(&fake, &["--config-file", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = shared::channels::Config::from_file(&path).unwrap();
    assert_eq!(config.ilink.len(), 1);
    assert_eq!(config.ilink[0].account, "second@im.bot");
    assert_eq!(config.wecom[0].app, "demo", "the rest of the config is kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077, 0, "not readable by others");
    }
}

/// `wxbridge dev` long-polls a configured iLink bot: no public URL, and the echo comes back.
#[test]
fn dev_answers_an_ilink_message_through_the_poller() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    let token = "c0ffee@im.bot:secret";
    fake.add_ilink_bot(token);
    fake.set_ilink_redeliver(Some(Duration::from_millis(300)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let config =
        serde_json::json!({"ilink": [{"account": "c0ffee@im.bot", "bot_token": token, "base_url": fake.base_url}]});
    std::fs::write(&path, config.to_string()).unwrap();
    let dev = start_dev(&["--config", path.to_str().unwrap()], &[]);
    fake.push_ilink_message(
        token,
        serde_json::json!({"message_id": 9_300_000_000_000_000_001u64, "from_user_id": "pal@im.wechat",
            "to_user_id": "c0ffee@im.bot", "create_time_ms": 1_700_000_000_000u64, "message_type": 1,
            "message_state": 2, "context_token": "ctx-pal", "item_list": [{"type": 1, "text_item": {"text": "在吗"}}]}),
    );
    wait_for_line(&dev, "inbound queue ← ilink:c0ffee@im.bot:9300000000000000001");
    let sent = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fake.deliveries_of(fakes::Api::Ilink).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(600));
        fake.deliveries_of(fakes::Api::Ilink)
    };
    assert_eq!(sent.len(), 1, "one reply though the message came twice: {:?}", fake.problems());
    assert_eq!(sent[0].body["msg"]["item_list"][0]["text_item"]["text"], "在吗");
    assert_eq!(sent[0].body["msg"]["context_token"], "ctx-pal");
    assert!(fake.problems().is_empty(), "{:?}", fake.problems());
}

/// `--secret` adds the bot to the deployed stack's config secret (here on the local emulator).
#[test]
fn ilink_login_writes_the_bot_into_the_config_secret() {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the tests with scripts/test (it starts the local AWS stack)");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(fakes::FakeWechat::start());
    let name = format!("wxbridge-it-{}", shared::core::ports::claim_token());
    let client =
        runtime.block_on(async { aws_sdk_secretsmanager::Client::new(&shared::adapters::aws::sdk_config().await) });
    runtime.block_on(client.create_secret().name(&name).secret_string(demo_without_ilink()).send()).unwrap();
    fake.set_ilink_login("b0t5@im.bot", "owner@im.wechat");
    fake.script_ilink_login(&["scaned", "confirmed"]);
    let out = ilink_login(&fake, &["--secret", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "nothing secret printed when written to the secret");
    let stored = runtime.block_on(client.get_secret_value().secret_id(&name).send()).unwrap();
    let config = shared::channels::Config::parse(stored.secret_string().unwrap()).unwrap();
    assert_eq!(config.ilink[0].account, "b0t5@im.bot");
    assert_eq!(config.ilink[0].base_url, fake.base_url);
    assert_eq!(config.wecom[0].app, "demo");

    let out = ilink_login(&fake, &["--secret", "no-such-secret"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read secret no-such-secret"));
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("WXBRIDGE_CONFIG")
        .env_remove("WXBRIDGE_CONFIG_SECRET")
        .output()
        .expect("run wxbridge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With no config, dev runs the demo apps against the built-in WeChat sandbox: the WeCom round
/// trip ends with the echo reaching the (sandboxed) user, which both sides print.
#[test]
fn sandbox_wecom_round_trip_shows_the_reply_the_user_gets() {
    let dev = start_dev(&[], &[]);
    let (ok, stdout, stderr) = cli(&["simulate", "wecom", "--text", "早上好", "--from", "LiLei", "--url", &dev.url]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("LiLei → POST /wecom/demo \"早上好\""), "{stdout}");
    assert!(stdout.contains("← 200 OK"), "{stdout}");
    assert!(stdout.contains("→ WeChat: LiLei sees \"早上好\" (wecom_app"), "the send that followed: {stdout}");
    let line = wait_for_line(&dev, "WeChat ▸");
    assert!(line.contains("LiLei") && line.contains("\"早上好\""), "dev shows the send: {line}");
    assert!(!stdout.contains('\x1b'), "no colour codes when not a terminal");

    // Machines get one JSON object.
    let (ok, stdout, _) = cli(&["simulate", "wecom", "--text", "json please", "--url", &dev.url, "--json"]);
    assert!(ok);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(result["status"], 200);
    assert_eq!(result["sent"]["to"], "WangFang");
    assert_eq!(result["sent"]["text"], "json please");
}

/// An Official Account message in safe and compatible mode: the passive reply comes back inside
/// WeChat's window and simulate decrypts it.
#[test]
fn sandbox_official_account_round_trip_decrypts_the_passive_reply() {
    let dev = start_dev(&[], &[]);
    for mode in ["safe", "compat"] {
        let (ok, stdout, stderr) = cli(&["simulate", "oa", "--text", "你好", "--mode", mode, "--url", &dev.url]);
        assert!(ok, "{mode}: {stdout}{stderr}");
        assert!(stdout.contains(&format!("POST /oa/demo ({mode} mode) \"你好\"")), "{stdout}");
        assert!(stdout.contains("delivery 1: passive reply \"你好\""), "{stdout}");
    }
    let (ok, stdout, _) = cli(&["simulate", "oa", "--text", "hi", "--url", &dev.url, "--json"]);
    assert!(ok);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (result["mode"].as_str(), result["reply"].as_str(), result["delivery"].as_u64()),
        (Some("safe"), Some("hi"), Some(1))
    );
    // The demo account has a key: plaintext would be a downgrade, which the bridge refuses.
    let (ok, _, stderr) = cli(&["simulate", "oa", "--text", "x", "--mode", "plain", "--url", &dev.url]);
    assert!(!ok);
    assert!(stderr.contains("refuses plaintext"), "{stderr}");
}

/// `send` queues an Outbound on dev's queue and shows the send it became.
#[test]
fn send_queues_an_outbound_that_the_sandbox_receives() {
    let dev = start_dev(&[], &[]);
    let (ok, stdout, stderr) = cli(&[
        "send",
        "--channel",
        "wecom_app",
        "--account",
        "demo",
        "--to",
        "HanMeimei",
        "--text",
        "会议改到三点",
        "--key",
        "k-1",
        "--url",
        &dev.url,
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("queued k-1: wecom_app from demo → HanMeimei"), "{stdout}");
    assert!(stdout.contains("→ WeChat: HanMeimei sees \"会议改到三点\""), "{stdout}");
    let (ok, _, stderr) =
        cli(&["send", "--channel", "fax", "--account", "demo", "--to", "x", "--text", "y", "--url", &dev.url]);
    assert!(!ok);
    assert!(stderr.contains("not a valid Outbound") && stderr.contains("unknown variant"), "{stderr}");
    assert!(stderr.contains("`wecom_app`"), "the channels it takes: {stderr}");
}

/// `check` names every broken field of a config (never its values) and fails; on a good config it
/// says which channels can receive and send.
#[test]
fn check_names_every_broken_field_and_the_ready_channels() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"wecom": [{"app": "hr", "corp_id": "ww1", "agent_id": 1, "token": "abcdef", "encoding_aes_key": "SECRETVALUE"}],
            "oa": [{"app": "news", "app_id": "wx1", "token": "x"}],
            "robots": [{"name": "ops", "key": ""}],
            "bot": {"kind": "http", "url": "not-a-url", "secret": "s"}}"#,
    )
    .unwrap();
    let (ok, stdout, stderr) = cli(&["check", "--config", broken.to_str().unwrap()]);
    assert!(!ok);
    for field in ["wecom[0].encoding_aes_key", "oa[0].token", "robots[0].key", "bot.url"] {
        assert!(stdout.contains(field), "{field} not named: {stdout}");
    }
    assert!(stderr.contains("4 problems found"), "{stderr}");
    assert!(!stdout.contains("SECRETVALUE"), "{stdout}");

    let (ok, stdout, _) = cli(&["check", "--config", broken.to_str().unwrap(), "--json"]);
    assert!(!ok);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["problems"].as_array().unwrap().len(), 4, "{report}");

    let good = dir.path().join("good.json");
    let mut config: serde_json::Value = serde_json::from_str(include_str!("../../examples/dev-config.json")).unwrap();
    config["wecom"][0].as_object_mut().unwrap().remove("secret");
    // A kf account needs its app's secret: without one it is a config problem of its own.
    config.as_object_mut().unwrap().remove("kf");
    std::fs::write(&good, config.to_string()).unwrap();
    let (ok, stdout, stderr) = cli(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("WeCom app demo") && stdout.contains("no secret: replies cannot be sent"), "{stdout}");
    assert!(stdout.contains("Official Account demo (compat/safe)"), "{stdout}");
    let aibot = stdout.lines().find(|l| l.contains("AI bot ops (@DeployBot)")).unwrap_or_default();
    for said in ["<API>/aibot/ops", "no secret needed", "streams for 6 min", "response_url"] {
        assert!(aibot.contains(said), "{said} not said: {stdout}");
    }
    assert!(stdout.contains("WXBRIDGE_TABLE"), "the environment is listed: {stdout}");

    let (ok, _, stderr) = cli(&["check"]);
    assert!(!ok);
    assert!(stderr.contains("nothing to check"), "{stderr}");
}

/// The demo AI bot in the sandbox: simulate plays WeCom, asks for the stream until it finishes,
/// and the answer is the echo without the @-mention; dev's banner names the bot's URL.
#[test]
fn sandbox_aibot_streams_the_echo_without_the_mention() {
    let dev = start_dev(&[], &[]);
    let route = wait_for_line(&dev, "AI bot ops");
    assert!(route.contains(&format!("{}/aibot/ops", dev.url)), "{route}");
    let hint = wait_for_line(&dev, "simulate aibot");
    assert!(hint.contains("--text \"@DeployBot hi\""), "{hint}");

    let (ok, stdout, stderr) = cli(&["simulate", "aibot", "--text", "@DeployBot 你好", "--url", &dev.url]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("WangFang → POST /aibot/ops (single chat) \"@DeployBot 你好\""), "{stdout}");
    assert!(stdout.contains("← 200 OK in "), "{stdout}");
    assert!(stdout.contains("\nDeployBot ▸ 你好\n"), "the answer as it grows: {stdout}");
    assert!(stdout.contains("→ WeChat: WangFang sees \"你好\" (stream finished after "), "{stdout}");
    let line = wait_for_line(&dev, "inbound queue ← wecom_aibot:ops:");
    assert!(line.contains("text from WangFang: \"你好\""), "the bot got the text without the mention: {line}");
}

/// `--json` is one document with every snapshot; `--group` writes from a group chat.
#[test]
fn sandbox_aibot_json_and_group_messages() {
    let dev = start_dev(&[], &[]);
    let (ok, stdout, stderr) = cli(&["simulate", "aibot", "--text", "@DeployBot 你好", "--url", &dev.url, "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(result["finished"], true, "{result}");
    assert_eq!(result["final"], "你好", "{result}");
    let snapshots = result["snapshots"].as_array().expect("snapshots");
    assert_eq!(snapshots.last(), Some(&serde_json::json!("你好")), "{result}");
    assert!(result["refreshes"].as_u64().is_some_and(|n| n >= 1), "{result}");
    assert!(result["stream_id"].as_str().is_some_and(|id| !id.is_empty()), "{result}");

    let (ok, stdout, stderr) = cli(&[
        "simulate",
        "aibot",
        "--group",
        "wrDEMO",
        "--user",
        "LiLei",
        "--text",
        "@DeployBot 回滚 api",
        "--url",
        &dev.url,
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("LiLei → POST /aibot/ops (group wrDEMO) \"@DeployBot 回滚 api\""), "{stdout}");
    assert!(stdout.contains("→ WeChat: group wrDEMO sees \"回滚 api\""), "{stdout}");
}

/// An unknown bot, no bridge, and a bridge that does not serve the bot each end the command with
/// a reason.
#[test]
fn simulate_aibot_fails_clearly_on_an_unknown_bot_no_bridge_or_a_refusal() {
    let (ok, _, stderr) = cli(&["simulate", "aibot", "--bot", "nope", "--text", "x", "--url", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(stderr.contains("no AI bot named 'nope'"), "{stderr}");
    let (ok, _, stderr) = cli(&["simulate", "aibot", "--text", "x", "--url", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(stderr.contains("cannot reach http://127.0.0.1:9 (is `wxbridge dev` running?)"), "{stderr}");

    // A bot this command knows but the bridge does not serve: WeCom's side shows the refusal.
    let dev = start_dev(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(include_str!("../../examples/dev-config.json")).unwrap();
    config["aibots"][0]["name"] = "hr".into();
    std::fs::write(&path, config.to_string()).unwrap();
    let config = path.to_str().unwrap();
    let (ok, stdout, stderr) =
        cli(&["simulate", "aibot", "--config", config, "--text", "x", "--url", &dev.url, "--json"]);
    assert!(!ok);
    assert!(stderr.contains("HTTP 404") && stderr.contains("unknown app"), "status and body: {stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!((result["finished"].as_bool(), result["final"].as_str()), (Some(false), None), "{result}");
    assert!(result["error"].as_str().is_some_and(|e| e.contains("HTTP 404")), "{result}");
}

/// A bridge stand-in whose stream never finishes: simulate stops when WeCom's window ends.
#[test]
fn simulate_aibot_fails_when_the_window_ends_before_the_stream_finishes() {
    let mut config: serde_json::Value = serde_json::from_str(include_str!("../../examples/dev-config.json")).unwrap();
    config["aibot_stream"] = serde_json::json!({"window_s": 3, "margin_s": 1});
    let bot = &config["aibots"][0];
    let crypt =
        fakes::aibot::MsgCrypt::new(bot["token"].as_str().unwrap(), bot["encoding_aes_key"].as_str().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let never_done = move |axum::extract::Query(query): axum::extract::Query<
        std::collections::HashMap<String, String>,
    >| {
        let crypt = crypt.clone();
        async move {
            let nonce = query.get("nonce").cloned().unwrap_or_default();
            let reply = serde_json::json!({"msgtype": "stream",
                "stream": {"id": "never-done", "finish": false, "content": "还在想…"}});
            let encrypt = crypt.encrypt([b'7'; 16], &reply.to_string(), "");
            let timestamp =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
            let signature = crypt.signature(&timestamp, &nonce, &encrypt);
            serde_json::json!({"encrypt": encrypt, "msgsignature": signature, "timestamp": timestamp, "nonce": nonce})
                .to_string()
        }
    };
    runtime.spawn(async move { axum::serve(listener, axum::Router::new().fallback(never_done)).await });

    let (ok, stdout, stderr) =
        cli(&["simulate", "aibot", "--config", path.to_str().unwrap(), "--text", "x", "--url", &url, "--json"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("stopped asking after 3 s and the stream had not finished"), "{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(result["finished"], false, "{result}");
    assert_eq!(result["snapshots"], serde_json::json!(["还在想…"]), "{result}");
    assert!(result["refreshes"].as_u64().is_some_and(|n| n >= 1), "{result}");
}

/// A picture sent with `simulate --image` is fetched into dev's media folder, echoed back, and
/// the file the sandbox received is the one sent.
#[test]
fn sandbox_image_round_trip_echoes_the_same_picture() {
    let dev = start_dev(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let picture: Vec<u8> =
        b"\x89PNG\r\n\x1a\n".iter().copied().chain((0..34_000u32).map(|i| (i * 13 % 251) as u8)).collect();
    let path = dir.path().join("照片.png");
    std::fs::write(&path, &picture).unwrap();
    let (ok, stdout, stderr) =
        cli(&["simulate", "wecom", "--image", path.to_str().unwrap(), "--url", &dev.url, "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(result["sent"]["text"], "[image 34 KB]", "{result}");
    let file = result["sent"]["file"].as_str().expect("a link to the sent file");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sent =
        runtime.block_on(async { reqwest::get(format!("{}{file}", dev.url)).await.unwrap().bytes().await.unwrap() });
    assert!(sent.as_ref() == picture.as_slice(), "the user gets the picture sent");
    let line = wait_for_line(&dev, "inbound queue ←");
    assert!(line.contains("[image 34 KB] http://127.0.0.1:"), "dev shows the stored file's link: {line}");
    // A file that is not there is refused before anything is sent.
    let (ok, _, stderr) = cli(&["simulate", "wecom", "--image", "/nonexistent.png", "--url", &dev.url]);
    assert!(!ok && stderr.contains("cannot read /nonexistent.png"), "{stderr}");
}

/// A follower's picture reaches the Official Account's echo: the first time the account has no
/// media id for it, so the callback answers at once and the picture goes by customer service
/// (uploaded as temporary media); the same picture again goes as the passive reply, by the
/// cached id, within WeChat's 5 seconds.
#[test]
fn sandbox_oa_picture_goes_by_customer_service_then_passively_by_its_cached_id() {
    let dev = start_dev(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let picture: Vec<u8> =
        [0xFF, 0xD8, 0xFF, 0xE0].iter().copied().chain((0..20_000u32).map(|i| (i * 7 % 253) as u8)).collect();
    let path = dir.path().join("猫.jpg");
    std::fs::write(&path, &picture).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fetch = |file: &str| {
        runtime.block_on(async { reqwest::get(format!("{}{file}", dev.url)).await.unwrap().bytes().await.unwrap() })
    };

    let (ok, stdout, stderr) = cli(&["simulate", "oa", "--image", path.to_str().unwrap(), "--url", &dev.url, "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let first: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(first["reply"], serde_json::Value::Null, "no media id yet, so no passive reply: {first}");
    assert!(first["elapsed_ms"].as_u64().unwrap() < 5_000, "answered within the first delivery: {first}");
    assert_eq!(
        (first["sent"]["channel"].as_str(), first["sent"]["text"].as_str()),
        (Some("oa"), Some("[image 20 KB]"))
    );
    let sent = fetch(first["sent"]["file"].as_str().expect("a link to the uploaded file"));
    assert!(sent.as_ref() == picture.as_slice(), "customer service sends the same picture");

    let (ok, stdout, stderr) = cli(&["simulate", "oa", "--image", path.to_str().unwrap(), "--url", &dev.url, "--json"]);
    assert!(ok, "{stdout}{stderr}");
    let second: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(second["reply"], "[image 20 KB]", "{second}");
    assert_eq!(second["delivery"], 1, "{second}");
    let passive = fetch(second["reply_file"].as_str().expect("the passive reply's file"));
    assert!(passive.as_ref() == picture.as_slice(), "the passive reply is the same picture");
    assert_eq!(second["sent"], serde_json::Value::Null, "nothing else goes by customer service: {second}");
}

/// A picture sent to the AI bot, in a single chat and in a group (a `mixed` message with the
/// mention), comes back in the finishing stream as a `msg_item` image with its md5 (the fake
/// WeCom side checks it), byte for byte.
#[test]
fn sandbox_ai_bot_echoes_a_picture_in_its_finishing_stream() {
    use sha2::Digest as _;
    let dev = start_dev(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let picture: Vec<u8> =
        b"\x89PNG\r\n\x1a\n".iter().copied().chain((0..30_000u32).map(|i| (i * 11 % 249) as u8)).collect();
    let path = dir.path().join("截图.png");
    std::fs::write(&path, &picture).unwrap();
    let sha256 = shared::protocol::hex::hex(&sha2::Sha256::digest(&picture));
    for group in [None, Some("wrDemoGroup")] {
        let mut args = vec!["simulate", "aibot", "--image", path.to_str().unwrap(), "--url", &dev.url, "--json"];
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        let (ok, stdout, stderr) = cli(&args);
        assert!(ok, "{stdout}{stderr}");
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(result["finished"], true, "{result}");
        assert_eq!(
            result["images"],
            serde_json::json!([{"size": picture.len(), "sha256": sha256}]),
            "the same picture in the stream ({group:?}): {result}"
        );
    }
}

/// A WeChat user writes to the demo 微信客服 account: the callback queues a pull, the puller
/// publishes the message, the echo goes back by kf/send_msg with a msgid; the same text again
/// is a new message and is answered again.
#[test]
fn sandbox_kf_round_trip_answers_the_customer() {
    let dev = start_dev(&[], &[]);
    for text in ["退货怎么办理", "退货怎么办理"] {
        let (ok, stdout, stderr) = cli(&["simulate", "kf", "--text", text, "--url", &dev.url, "--json"]);
        assert!(ok, "{stdout}{stderr}");
        let result: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(
            (result["sent"]["channel"].as_str(), result["sent"]["text"].as_str()),
            (Some("wecom_kf"), Some(text))
        );
        let msgid = result["sent"]["body"]["msgid"].as_str().unwrap();
        assert!(msgid.len() <= 32 && msgid.bytes().all(|b| b.is_ascii_alphanumeric()), "{msgid}");
    }
    let (ok, _, stderr) = cli(&["simulate", "kf", "--account", "nope", "--text", "x", "--url", &dev.url]);
    assert!(!ok && stderr.contains("no kf account named 'nope'"), "{stderr}");
}

/// The events of `GET /events` (kept ones first, then live), read until `enough` holds for them
/// or 20 s pass.
async fn events_until(url: &str, enough: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let mut response = reqwest::get(format!("{url}/events")).await.expect("dev serves /events");
    assert_eq!(
        response.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream"),
        "server-sent events"
    );
    let (mut events, mut pending) = (Vec::new(), Vec::<u8>::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !enough(&events) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk()).await;
        let Ok(Ok(Some(chunk))) = chunk else { break };
        // Whole events only: a chunk may end inside a character.
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = pending.drain(..end + 2).collect();
            let block = std::str::from_utf8(&block).expect("events are UTF-8");
            for data in block.lines().filter_map(|line| line.strip_prefix("data: ")) {
                events.push(serde_json::from_str(data).expect("each event is JSON"));
            }
        }
    }
    events
}

async fn say(url: &str, body: serde_json::Value) -> (u16, String) {
    let response =
        reqwest::Client::new().post(format!("{url}/sandbox/say")).json(&body).send().await.expect("dev answers");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// The page's conversations are the demo's five channels; a message typed in one is traced hop
/// by hop to the reply, and no credential of the demo shows anywhere in the feed.
#[test]
fn the_chat_page_traces_a_message_from_callback_to_reply() {
    let dev = start_dev(&[], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let page = reqwest::get(format!("{}/", dev.url)).await.unwrap();
        assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(page.text().await.unwrap().contains("data-testid"), "the chat page");
        let chats: serde_json::Value =
            reqwest::get(format!("{}/sandbox/chats", dev.url)).await.unwrap().json().await.unwrap();
        let channels: Vec<&str> =
            chats["chats"].as_array().unwrap().iter().map(|c| c["channel"].as_str().unwrap()).collect();
        assert_eq!(channels, ["wecom", "wecom_aibot", "oa", "ilink", "wecom_kf"]);
        assert_eq!(chats["sandbox"], true);

        let (status, body) =
            say(&dev.url, serde_json::json!({"chat": "wecom:demo:WangFang", "text": "你好 trace"})).await;
        assert_eq!(status, 202, "{body}");
        let msg = serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"].as_str().unwrap().to_owned();
        let of_msg = |events: &[serde_json::Value], kind: &str| {
            events.iter().filter(|e| e["msg"] == msg.as_str() && e["kind"] == kind).cloned().collect::<Vec<_>>()
        };
        let events = events_until(&dev.url, |events| {
            !of_msg(events, "reply").is_empty()
                && of_msg(events, "api").iter().any(|e| e["path"] == "/cgi-bin/message/send")
        })
        .await;
        for kind in ["user", "callback", "queued", "bot", "send", "reply"] {
            assert_eq!(of_msg(&events, kind).len(), 1, "one {kind} event for {msg}: {events:#?}");
        }
        assert_eq!(of_msg(&events, "callback")[0]["status"], 200);
        assert_eq!(of_msg(&events, "reply")[0]["text"], "你好 trace");
        assert_eq!(of_msg(&events, "reply")[0]["chat"], "wecom:demo:WangFang");
        let send = of_msg(&events, "api").into_iter().find(|e| e["path"] == "/cgi-bin/message/send").unwrap();
        assert_eq!(send["request"]["touser"], "WangFang");
        assert!(send["query"].as_str().unwrap().starts_with("access_token="), "{send}");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        let all = serde_json::to_string(&events).unwrap();
        assert!(all.contains("/cgi-bin/gettoken"), "the token call is traced too");
        for secret in
            ["sandbox-only-demo-secret", "sandbox-only-demo-app-secret", "demo@im.bot:sandbox-only-demo-bot-token"]
        {
            assert!(!all.contains(secret), "{secret} shows in the feed");
        }
        // The access token itself is masked wherever it appears.
        let token = events
            .iter()
            .find(|e| e["path"] == "/cgi-bin/gettoken")
            .and_then(|e| e["response"]["access_token"].as_str())
            .unwrap();
        assert!(token.starts_with("****") && token.len() == 12, "{token}");
    });
}

/// What the page may send is checked: each bad request is refused with a reason that does not
/// quote it, and nothing reaches the bridge.
#[test]
fn the_chat_page_refuses_bad_messages_clearly() {
    let dev = start_dev(&[], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let wecom = "wecom:demo:WangFang";
        let png_head = base64_of(b"\x89PNG\r\n\x1a\n0000");
        let cases = [
            (serde_json::json!("{\"chat\": \"secret words"), 400, "not a message"),
            (serde_json::json!({"chat": "nope:x:y", "text": "hi"}), 404, "no such conversation"),
            (serde_json::json!({"chat": wecom}), 400, "give a text or a picture"),
            (serde_json::json!({"chat": wecom, "text": "x".repeat(17 * 1024)}), 413, "over"),
            (serde_json::json!({"chat": wecom, "text": "hi", "from": "Mallory"}), 400, "not in this conversation"),
            (serde_json::json!({"chat": wecom, "image": {"name": "a.png", "data": "%%%"}}), 400, "not base64"),
            (
                serde_json::json!({"chat": wecom, "image": {"name": "a.txt", "data": base64_of(b"secret words")}}),
                400,
                "not a picture",
            ),
            (
                serde_json::json!({"chat": "wecom_kf:support:wmDemoCustomer0000000000001", "text": "x",
                                "image": {"name": "a.png", "data": png_head}}),
                400,
                "text only",
            ),
        ];
        for (body, want, reason) in cases {
            let response = match &body {
                serde_json::Value::String(raw) => reqwest::Client::new()
                    .post(format!("{}/sandbox/say", dev.url))
                    .header("content-type", "application/json")
                    .body(raw.clone())
                    .send()
                    .await
                    .unwrap(),
                json => {
                    reqwest::Client::new().post(format!("{}/sandbox/say", dev.url)).json(json).send().await.unwrap()
                }
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!((status, text.contains(reason)), (want, true), "{body}: {text}");
            assert!(!text.contains("secret words"), "{text}");
        }
        // A form on another site (text/plain, no preflight) is refused.
        let form = reqwest::Client::new()
            .post(format!("{}/sandbox/say", dev.url))
            .header("content-type", "text/plain")
            .body(serde_json::json!({"chat": wecom, "text": "from elsewhere"}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(form.status().as_u16(), 415);
        // Another site's page cannot make the bridge speak, by either route.
        let client = reqwest::Client::new();
        let say_from_elsewhere = client
            .post(format!("{}/sandbox/say", dev.url))
            .header("sec-fetch-site", "cross-site")
            .json(&serde_json::json!({"chat": wecom, "text": "from elsewhere"}))
            .send()
            .await
            .unwrap();
        assert_eq!(say_from_elsewhere.status().as_u16(), 403);
        let outbound = serde_json::json!({"v": 1, "channel": "wecom_app", "account": "demo", "to": "WangFang",
            "content": {"type": "text", "text": "from elsewhere"}, "idempotency_key": "cross-site-1"});
        let posted = client
            .post(format!("{}/outbound", dev.url))
            .header("origin", "https://evil.example")
            .body(outbound.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status().as_u16(), 403);
        // A good message after them is the only one that reaches the queue.
        let (status, body) = say(&dev.url, serde_json::json!({"chat": wecom, "text": "fine"})).await;
        assert_eq!(status, 202, "{body}");
        let events = events_until(&dev.url, |events| events.iter().any(|e| e["kind"] == "queued")).await;
        let reached: Vec<&serde_json::Value> =
            events.iter().filter(|e| e["kind"] == "user" || e["kind"] == "queued").collect();
        assert_eq!(reached.len(), 2, "{events:#?}");
        assert!(reached.iter().all(|e| e["msg"] == reached[0]["msg"]), "{reached:#?}");
    });
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// With a real config (no sandbox) the page has no sandbox users to write as, and a bot's
/// message shows in the trace as the sender's attempt.
#[test]
fn with_a_real_config_the_page_is_read_only_and_traces_sends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, demo_without_ilink()).unwrap();
    // WeChat's API host on a closed port: the send fails as it would without a network.
    let dev =
        start_dev(&["--config", path.to_str().unwrap()], &[("WXBRIDGE_WECOM_API_BASE", "http://127.0.0.1:9".into())]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let chats: serde_json::Value =
            reqwest::get(format!("{}/sandbox/chats", dev.url)).await.unwrap().json().await.unwrap();
        assert_eq!(chats["sandbox"], false);
        assert_eq!(chats["chats"], serde_json::json!([]), "{chats}");
        let (status, body) = say(&dev.url, serde_json::json!({"chat": "wecom:demo:WangFang", "text": "hi"})).await;
        assert_eq!(status, 404, "{body}");
        let outbound = serde_json::json!({"v": 1, "channel": "wecom_app", "account": "demo", "to": "WangFang",
            "content": {"type": "text", "text": "from the bot"}, "idempotency_key": "page-real-1"});
        let (status, body) = post(&format!("{}/outbound", dev.url), outbound.to_string()).await;
        assert_eq!(status, 202, "{body}");
        let events = events_until(&dev.url, |events| events.iter().any(|e| e["kind"] == "send")).await;
        let send = events.iter().find(|e| e["kind"] == "send").expect("the send is traced");
        assert_eq!(
            (send["chat"].as_str(), send["outcome"].as_str()),
            (Some("wecom:demo:WangFang"), Some("retry")),
            "{send}"
        );
    });
}

/// Two conversations at once: each reply, and each WeChat API call made for a message, is placed
/// in that message's trace, not in the newest one's.
#[test]
fn the_chat_page_places_each_call_with_its_own_message() {
    let dev = start_dev(&[], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let picture = base64_of(&[b"\x89PNG\r\n\x1a\n".as_slice(), &[7u8; 2000]].concat());
        let wecom = say(
            &dev.url,
            serde_json::json!({"chat": "wecom:demo:WangFang", "image": {"name": "a.png", "data": picture}}),
        );
        let kf =
            say(&dev.url, serde_json::json!({"chat": "wecom_kf:support:wmDemoCustomer0000000000001", "text": "退货"}));
        let ((_, wecom), (_, kf)) = tokio::join!(wecom, kf);
        let id =
            |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap()["msg"].as_str().unwrap().to_owned();
        let (wecom, kf) = (id(&wecom), id(&kf));
        let replied = |events: &[serde_json::Value], msg: &str| {
            events.iter().any(|e| e["kind"] == "reply" && e["msg"] == msg && e["file_kind"] == "image")
                || events.iter().any(|e| e["kind"] == "reply" && e["msg"] == msg && e["text"] == "退货")
        };
        let events = events_until(&dev.url, |events| replied(events, &wecom) && replied(events, &kf)).await;
        let calls = |path: &str| -> Vec<String> {
            events
                .iter()
                .filter(|e| e["kind"] == "api" && e["path"] == path)
                .map(|e| e["msg"].as_str().unwrap_or("(none)").to_owned())
                .collect()
        };
        assert_eq!(calls("/cgi-bin/media/get"), [wecom.as_str()], "{events:#?}");
        assert_eq!(
            calls("/cgi-bin/media/upload"),
            [wecom.as_str()],
            "{:#?}",
            events
                .iter()
                .filter(|e| e["kind"] != "user")
                .map(|e| format!("{} {} {} {}", e["at"], e["kind"], e["path"], e["msg"]))
                .collect::<Vec<_>>()
        );
        assert_eq!(calls("/cgi-bin/message/send"), [wecom.as_str()]);
        assert_eq!(calls("/cgi-bin/kf/sync_msg"), [kf.as_str()]);
        assert_eq!(calls("/cgi-bin/kf/send_msg"), [kf.as_str()]);
        let picture_reply = events.iter().find(|e| e["kind"] == "reply" && e["msg"] == wecom.as_str()).unwrap();
        let link = picture_reply["file"].as_str().expect("the echoed picture's link");
        let bytes = reqwest::get(format!("{}{link}", dev.url)).await.unwrap().bytes().await.unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "the page shows the picture");
    });
}

/// An iLink picture comes back as a picture the page can show, its CDN parameter nowhere in the
/// feed but masked; "typing…" ends.
#[test]
fn the_chat_page_shows_an_ilink_picture_and_ends_typing() {
    let dev = start_dev(&[], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let chat = "ilink:demo@im.bot:o9cq80demoUser@im.wechat";
        let picture = base64_of(&[b"\x89PNG\r\n\x1a\n".as_slice(), &[9u8; 3000]].concat());
        let (status, body) =
            say(&dev.url, serde_json::json!({"chat": chat, "image": {"name": "p.png", "data": picture}})).await;
        assert_eq!(status, 202, "{body}");
        let msg = serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"].as_str().unwrap().to_owned();
        let events = events_until(&dev.url, |events| {
            events.iter().any(|e| e["kind"] == "reply" && e["msg"] == msg.as_str())
                && events.iter().any(|e| e["kind"] == "typing" && e["on"] == false)
        })
        .await;
        let reply = events.iter().find(|e| e["kind"] == "reply" && e["msg"] == msg.as_str()).unwrap();
        assert_eq!((reply["chat"].as_str(), reply["file_kind"].as_str()), (Some(chat), Some("image")), "{reply}");
        let bytes = reqwest::get(format!("{}{}", dev.url, reply["file"].as_str().unwrap()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let send = events.iter().find(|e| e["kind"] == "api" && e["path"] == "/ilink/bot/sendmessage").unwrap();
        let param = &send["request"]["msg"]["item_list"][0]["image_item"]["media"]["encrypt_query_param"];
        assert!(param.as_str().is_some_and(|p| p.starts_with("****")), "{send}");
        let typing: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "typing").collect();
        assert_eq!(typing.last().unwrap()["on"], false, "{typing:#?}");
    });
}

/// A reply the sender gives up on shows as dead with its reason, once, and never as sent: in
/// memory and on the emulator's queues (where the sender's dead-letter queue is SQS).
#[test]
fn the_chat_page_shows_a_dead_letter_with_its_reason() {
    for mode in [&[][..], &["--aws"][..]] {
        if mode.contains(&"--aws") && std::env::var_os("AWS_ENDPOINT_URL").is_none() {
            panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test (it starts the local AWS stack)");
        }
        dead_letter_shows_once(mode);
    }
}

fn dead_letter_shows_once(mode: &[&str]) {
    let dev = start_dev(mode, &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let outbound = serde_json::json!({"v": 1, "channel": "wecom_kf", "account": "support", "to": "wmNobody",
            "content": {"type": "text", "text": "hi"}, "idempotency_key": "page-dead-1"});
        let (status, body) = post(&format!("{}/outbound", dev.url), outbound.to_string()).await;
        assert_eq!(status, 202, "{body}");
        let not_sent = |e: &serde_json::Value| {
            e["kind"] == "note" && e["text"].as_str().is_some_and(|t| t.starts_with("not sent:"))
        };
        events_until(&dev.url, |events| events.iter().any(not_sent)).await;
        // Anything reported after the dead letter comes within a moment; a message said after
        // that is a marker: every event before it is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _) = say(&dev.url, serde_json::json!({"chat": "wecom:demo:WangFang", "text": "marker"})).await;
        assert_eq!(status, 202);
        let events = events_until(&dev.url, |seen| seen.iter().any(|e| e["kind"] == "user")).await;
        let sends: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "send").collect();
        assert_eq!(sends.len(), 1, "{mode:?}: {sends:#?}");
        assert_eq!(sends[0]["outcome"], "dead");
        assert!(sends[0]["reason"].as_str().unwrap().contains("48 hours"), "{}", sends[0]);
        let note = events.iter().find(|e| not_sent(e)).unwrap();
        assert_eq!((note["chat"].as_str(), note["level"].as_str()), (Some("wecom_kf:support:wmNobody"), Some("error")));
    });
}

/// An Official Account bot slower than WeChat's 5 s: the first delivery's hop shows WeChat
/// hanging up, the next delivery answers passively.
#[test]
fn the_chat_page_traces_a_delivery_wechat_gave_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&demo_without_ilink()).unwrap();
    config["bots"]["typist"]["stream_ms"] = 6_000.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let dev = start_dev(&["--config", path.to_str().unwrap(), "--sandbox"], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (status, body) =
            say(&dev.url, serde_json::json!({"chat": "oa:demo:oDemoUser0000000000000000001", "text": "慢"})).await;
        assert_eq!(status, 202, "{body}");
        let msg = serde_json::from_str::<serde_json::Value>(&body).unwrap()["msg"].as_str().unwrap().to_owned();
        let events =
            events_until(&dev.url, |events| events.iter().any(|e| e["kind"] == "reply" && e["msg"] == msg.as_str()))
                .await;
        let of = |kind: &str| -> Vec<&serde_json::Value> {
            events.iter().filter(|e| e["msg"] == msg.as_str() && e["kind"] == kind).collect()
        };
        assert_eq!(of("window").len(), 2, "two deliveries: {events:#?}");
        let callbacks = of("callback");
        let statuses: Vec<&serde_json::Value> = callbacks.iter().map(|e| &e["status"]).collect();
        assert_eq!(statuses.len(), 2, "{callbacks:#?}");
        assert!(statuses.contains(&&serde_json::json!(200)), "{callbacks:#?}");
        let abandoned = callbacks.iter().find(|e| e["status"].is_null()).expect("the first delivery's hop");
        assert!(abandoned["ms"].as_u64().unwrap() >= 4_500, "WeChat waited its 5 s: {abandoned}");
        assert!(abandoned["answer"].as_str().unwrap().contains("hung up"), "{abandoned}");
        let reply = events.iter().find(|e| e["kind"] == "reply" && e["msg"] == msg.as_str()).unwrap();
        assert_eq!((reply["via"].as_str(), reply["text"].as_str()), (Some("passive"), Some("慢")), "{reply}");
    });
}
