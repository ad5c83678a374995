//! The typed WeChat API calls against the fake servers.

use fakes::FakeWechat;
use secrecy::SecretString;
use shared::api::{ApiError, ApiSettings, WechatApi};

async fn setup() -> (FakeWechat, WechatApi) {
    let fake = FakeWechat::start().await;
    fake.add_wecom_app("ww1", "secret", 1_000_002);
    for user in ["a", "b", "c"] {
        fake.add_wecom_user(user);
    }
    fake.add_robot("robot-key");
    fake.add_oa("wxoa", "oa-secret");
    fake.add_oa_user("open-1");
    let settings =
        ApiSettings { wecom_base: fake.base_url.clone(), oa_base: fake.base_url.clone(), ..ApiSettings::default() };
    (fake, WechatApi::new(&settings).unwrap())
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

#[tokio::test]
async fn app_group_chats_are_created_updated_and_read() {
    let (fake, api) = setup().await;
    let token = api.wecom_token("ww1", &secret("secret")).await.unwrap().value;
    let chat = api.appchat_create(&token, Some("ops"), Some("a"), &["a", "b"], None).await.unwrap();
    api.appchat_update(&token, &chat, Some("ops-2"), &["c"], &["b"]).await.unwrap();
    let info = api.appchat_get(&token, &chat).await.unwrap();
    assert_eq!(info["name"], "ops-2");
    assert_eq!(info["userlist"], serde_json::json!(["a", "c"]));
    let missing = api.appchat_get(&token, "nosuchchat").await.unwrap_err();
    assert_eq!(missing.errcode(), Some(86003));
    assert!(fake.problems().iter().all(|p| p.contains("nosuchchat")), "{:?}", fake.problems());
}

#[tokio::test]
async fn media_uploads_return_media_ids() {
    let (fake, api) = setup().await;
    let token = api.wecom_token("ww1", &secret("secret")).await.unwrap().value;
    let id = api.media_upload(&token, "file", "report.pdf", b"%PDF-1.4 hello".to_vec()).await.unwrap();
    assert!(!id.is_empty());
    let id =
        api.webhook_upload_media(&secret("robot-key"), "file", "notes.txt", b"hello robot".to_vec()).await.unwrap();
    assert!(!id.is_empty());
    let tiny = api.media_upload(&token, "file", "x.txt", b"1".to_vec()).await.unwrap_err();
    assert_eq!(tiny.errcode(), Some(40006));
    let bad_key =
        api.webhook_upload_media(&secret("wrong"), "file", "n.txt", b"hello robot".to_vec()).await.unwrap_err();
    assert_eq!(bad_key.errcode(), Some(93000));
    assert_eq!(fake.problems().len(), 2);
}

#[tokio::test]
async fn official_account_typing_and_stable_token() {
    let (fake, api) = setup().await;
    let token = api.oa_stable_token("wxoa", &secret("oa-secret")).await.unwrap();
    assert_eq!(token.expires_in, 7200);
    api.oa_typing(&token.value, "open-1", true).await.unwrap();
    api.oa_typing(&token.value, "open-1", false).await.unwrap();
    let wrong = api.oa_stable_token("wxoa", &secret("nope")).await.unwrap_err();
    assert!(matches!(wrong, ApiError::Errcode { code: 40125, .. }), "{wrong}");
    assert_eq!(fake.calls("/cgi-bin/token"), 0);
}
