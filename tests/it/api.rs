//! The typed WeChat API calls against the fake servers.

use fakes::FakeWechat;
use secrecy::SecretString;
use shared::channels::Apis;
use shared::core::config::Env;
use shared::core::http::ApiError;

async fn setup() -> (FakeWechat, Apis) {
    let fake = FakeWechat::start().await;
    fake.add_wecom_app("ww1", "secret", 1_000_002);
    for user in ["a", "b", "c"] {
        fake.add_wecom_user(user);
    }
    fake.add_robot("robot-key");
    fake.add_oa("wxoa", "oa-secret");
    fake.add_oa_user("open-1");
    let env = Env::from_vars([("WXBRIDGE_WECOM_API_BASE", &fake.base_url), ("WXBRIDGE_OA_API_BASE", &fake.base_url)]);
    let apis = Apis::from_env(&env).unwrap();
    (fake, apis)
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

#[tokio::test]
async fn app_group_chats_are_created_updated_and_read() {
    let (fake, api) = setup().await;
    let token = api.wecom.token("ww1", &secret("secret")).await.unwrap().value;
    let chat = api.wecom.appchat_create(&token, Some("ops"), Some("a"), &["a", "b"], None).await.unwrap();
    api.wecom.appchat_update(&token, &chat, Some("ops-2"), &["c"], &["b"]).await.unwrap();
    let info = api.wecom.appchat_get(&token, &chat).await.unwrap();
    assert_eq!(info["name"], "ops-2");
    assert_eq!(info["userlist"], serde_json::json!(["a", "c"]));
    let missing = api.wecom.appchat_get(&token, "nosuchchat").await.unwrap_err();
    assert_eq!(missing.errcode(), Some(86003));
    assert!(fake.problems().iter().all(|p| p.contains("nosuchchat")), "{:?}", fake.problems());
}

#[tokio::test]
async fn media_uploads_return_media_ids() {
    let (fake, api) = setup().await;
    let token = api.wecom.token("ww1", &secret("secret")).await.unwrap().value;
    let id = api.wecom.media_upload(&token, "file", "report.pdf", b"%PDF-1.4 hello".to_vec()).await.unwrap();
    assert!(!id.is_empty());
    let id = api.robot.upload_media(&secret("robot-key"), "file", "notes.txt", b"hello robot".to_vec()).await.unwrap();
    assert!(!id.is_empty());
    let tiny = api.wecom.media_upload(&token, "file", "x.txt", b"1".to_vec()).await.unwrap_err();
    assert_eq!(tiny.errcode(), Some(40006));
    let bad_key = api.robot.upload_media(&secret("wrong"), "file", "n.txt", b"hello robot".to_vec()).await.unwrap_err();
    assert_eq!(bad_key.errcode(), Some(93000));
    assert_eq!(fake.problems().len(), 2);
}

#[tokio::test]
async fn official_account_typing_and_stable_token() {
    let (fake, api) = setup().await;
    let token = api.oa.stable_token("wxoa", &secret("oa-secret")).await.unwrap();
    assert_eq!(token.expires_in, 7200);
    api.oa.typing(&token.value, "open-1", true).await.unwrap();
    api.oa.typing(&token.value, "open-1", false).await.unwrap();
    let wrong = api.oa.stable_token("wxoa", &secret("nope")).await.unwrap_err();
    assert!(matches!(wrong, ApiError::Errcode { code: 40125, .. }), "{wrong}");
    assert_eq!(fake.calls("/cgi-bin/token"), 0);
}

#[tokio::test]
async fn ilink_getupdates_long_polls_replays_stale_cursors_and_treats_its_own_timeout_as_empty() {
    let (fake, api) = setup().await;
    let token = secret("0123@im.bot:secret");
    fake.add_ilink_bot("0123@im.bot:secret");
    fake.set_ilink_hold(std::time::Duration::from_millis(200));
    let hold = std::time::Duration::from_secs(2);

    let started = std::time::Instant::now();
    let empty = api.ilink.getupdates(&fake.base_url, &token, "", hold).await.unwrap();
    assert!(empty.messages.is_empty());
    assert!(started.elapsed() >= std::time::Duration::from_millis(150), "the server held the poll");
    assert_eq!(empty.hold_hint, Some(std::time::Duration::from_millis(200)));
    let start = empty.cursor.unwrap();

    let message = |id: u64, text: &str| {
        serde_json::json!({"seq": id, "message_id": id, "from_user_id": "u@im.wechat", "to_user_id": "0123@im.bot",
            "create_time_ms": 1_767_225_600_000u64, "message_type": 1, "message_state": 2, "context_token": format!("ctx{id}"),
            "item_list": [{"type": 1, "text_item": {"text": text}}]})
    };
    fake.push_ilink_message("0123@im.bot:secret", message(7_300_000_000_000_000_001, "一"));
    fake.push_ilink_message("0123@im.bot:secret", message(7_300_000_000_000_000_001, "一"));
    let got = api.ilink.getupdates(&fake.base_url, &token, &start, hold).await.unwrap();
    assert_eq!(got.messages.len(), 2, "the server sends some messages twice");
    assert_eq!(got.messages[0].0.message_id, Some(7_300_000_000_000_000_001));
    assert_eq!(got.messages[0].0.context_token.as_deref(), Some("ctx7300000000000000001"));
    let next = got.cursor.unwrap();
    assert!(api.ilink.getupdates(&fake.base_url, &token, &next, hold).await.unwrap().messages.is_empty());
    assert_eq!(
        api.ilink.getupdates(&fake.base_url, &token, &start, hold).await.unwrap().messages.len(),
        2,
        "a stale cursor replays"
    );

    fake.set_ilink_hold(std::time::Duration::from_secs(3));
    let timed_out =
        api.ilink.getupdates(&fake.base_url, &token, &next, std::time::Duration::from_millis(300)).await.unwrap();
    assert!(timed_out.messages.is_empty() && timed_out.cursor.is_none(), "our own timeout is an empty poll");

    let revoked = api.ilink.getupdates(&fake.base_url, &secret("other@im.bot:x"), "", hold).await.unwrap_err();
    assert_eq!(revoked.errcode(), Some(-14));
}
