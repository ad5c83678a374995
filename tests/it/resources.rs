//! The resources the local set-up creates are the ones `template.yaml` declares, and the config
//! secret loads from Secrets Manager.

use serde_yaml::Value as Yaml;
use shared::adapters::aws::resources::{
    QueueSpec, BOT, BOT_DLQ, INBOUND, INBOUND_DLQ, KF_PULL, KF_PULL_DLQ, MEDIA, MEDIA_DLQ, OUTBOUND, OUTBOUND_DLQ,
    TABLE_PARTITION_KEY, TABLE_TTL_ATTRIBUTE,
};
use shared::core::config::Env;
use shared::testing::fixtures::{WECOM_AES_KEY, WECOM_CORP_ID, WECOM_TOKEN};

use crate::support::Stack;

const TEMPLATE: &str = include_str!("../../template.yaml");

fn template() -> Yaml {
    serde_yaml::from_str(TEMPLATE).expect("template.yaml parses")
}

fn resource<'a>(template: &'a Yaml, name: &str) -> &'a Yaml {
    &template["Resources"][name]
}

/// `!Ref X`, `!GetAtt X.Arn`, `!Sub "…"` as (tag, text).
fn tagged(value: &Yaml) -> Option<(String, String)> {
    match value {
        Yaml::Tagged(t) => Some((t.tag.to_string(), t.value.as_str().unwrap_or_default().to_owned())),
        _ => None,
    }
}

fn number(value: &Yaml) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a number: {value:?}"))
}

fn check_queue(template: &Yaml, logical_id: &str, spec: QueueSpec, dlq: Option<&str>) {
    let props = &resource(template, logical_id)["Properties"];
    assert_eq!(resource(template, logical_id)["Type"], "AWS::SQS::Queue");
    assert_eq!(number(&props["VisibilityTimeout"]), u64::from(spec.visibility_timeout_s), "{logical_id}");
    assert_eq!(number(&props["MessageRetentionPeriod"]), u64::from(spec.retention_s), "{logical_id}");
    let (tag, name) = tagged(&props["QueueName"]).unwrap();
    assert_eq!((tag.as_str(), name), ("!Sub", format!("${{AWS::StackName}}-{}", spec.suffix)));
    let fifo = props.get("FifoQueue").is_some_and(|f| *f == Yaml::Bool(true));
    assert_eq!(fifo, spec.fifo(), "{logical_id}: FifoQueue");
    let (scope, limit) = (props.get("DeduplicationScope"), props.get("FifoThroughputLimit"));
    match spec.high_throughput {
        true => {
            assert_eq!(
                (scope, limit),
                (Some(&"messageGroup".into()), Some(&"perMessageGroupId".into())),
                "{logical_id}"
            )
        }
        false => assert_eq!((scope, limit), (None, None), "{logical_id}: not in high-throughput mode"),
    }
    match (dlq, spec.max_receive_count) {
        (Some(dlq), Some(count)) => {
            let redrive = &props["RedrivePolicy"];
            assert_eq!(number(&redrive["maxReceiveCount"]), u64::from(count), "{logical_id}");
            assert_eq!(tagged(&redrive["deadLetterTargetArn"]), Some(("!GetAtt".into(), format!("{dlq}.Arn"))));
        }
        (None, None) => assert!(props.get("RedrivePolicy").is_none()),
        other => panic!("{logical_id}: spec and template disagree on a DLQ: {other:?}"),
    }
}

#[test]
fn the_table_matches_the_local_set_up() {
    let t = template();
    let props = &resource(&t, "Table")["Properties"];
    assert_eq!(props["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(props["KeySchema"][0]["AttributeName"], TABLE_PARTITION_KEY);
    assert_eq!(props["KeySchema"][0]["KeyType"], "HASH");
    assert_eq!(props["AttributeDefinitions"][0]["AttributeType"], "S");
    assert_eq!(props["TimeToLiveSpecification"]["AttributeName"], TABLE_TTL_ATTRIBUTE);
    assert_eq!(props["TimeToLiveSpecification"]["Enabled"], true);
}

#[test]
fn the_queues_match_the_local_set_up_and_each_has_a_dlq() {
    let t = template();
    check_queue(&t, "InboundQueue", INBOUND, Some("InboundDeadLetterQueue"));
    check_queue(&t, "InboundDeadLetterQueue", INBOUND_DLQ, None);
    check_queue(&t, "OutboundQueue", OUTBOUND, Some("OutboundDeadLetterQueue"));
    check_queue(&t, "OutboundDeadLetterQueue", OUTBOUND_DLQ, None);
    check_queue(&t, "MediaQueue", MEDIA, Some("MediaDeadLetterQueue"));
    check_queue(&t, "MediaDeadLetterQueue", MEDIA_DLQ, None);
    check_queue(&t, "BotQueue", BOT, Some("BotDeadLetterQueue"));
    check_queue(&t, "BotDeadLetterQueue", BOT_DLQ, None);
    check_queue(&t, "KfPullQueue", KF_PULL, Some("KfPullDeadLetterQueue"));
    check_queue(&t, "KfPullDeadLetterQueue", KF_PULL_DLQ, None);
    // Conversations in order and WeChat's retries dropped by the queues' deduplication; a FIFO
    // queue's DLQ is FIFO too.
    for fifo in [INBOUND, INBOUND_DLQ, MEDIA, MEDIA_DLQ, KF_PULL, KF_PULL_DLQ] {
        assert!(fifo.fifo(), "{}", fifo.suffix);
    }
    // Many groups (a conversation each, a message each): throughput per group.
    for many_groups in [INBOUND, MEDIA] {
        assert!(many_groups.high_throughput, "{}", many_groups.suffix);
    }
    let resources = t["Resources"].as_mapping().unwrap();
    let dlqs: Vec<String> = resources
        .values()
        .filter_map(|r| tagged(&r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]))
        .map(|(_, target)| target.trim_end_matches(".Arn").to_owned())
        .collect();
    for (name, r) in resources {
        let name = name.as_str().unwrap();
        if r["Type"] == "AWS::SQS::Queue" && !dlqs.iter().any(|d| d == name) {
            assert!(r["Properties"].get("RedrivePolicy").is_some(), "{name} has no DLQ");
        }
    }
}

#[test]
fn every_function_the_workspace_builds_is_in_the_template() {
    let t = template();
    let binaries: Vec<String> = t["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::Serverless::Function")
        .map(|r| r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_owned())
        .collect();
    let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let mut found = 0;
    for entry in std::fs::read_dir(functions).unwrap() {
        let manifest = std::fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let name = manifest.lines().find_map(|l| l.strip_prefix("name = ")).unwrap().trim_matches('"');
        assert!(binaries.iter().any(|b| b == name), "{name} is not in template.yaml");
        found += 1;
    }
    assert!(found >= 1);
}

/// The resources a function's policy statements name, in order (`secret` for the config secret).
fn policy_targets(template: &Yaml, function: &str) -> Vec<String> {
    let statements = &resource(template, function)["Properties"]["Policies"][0]["Statement"];
    let mut targets = Vec::new();
    for statement in statements.as_sequence().unwrap() {
        let actions = statement["Action"].as_sequence().unwrap();
        assert!(!actions.iter().any(|a| a.as_str().unwrap().ends_with('*')), "{function}: wildcard action");
        targets.push(match tagged(&statement["Resource"]) {
            Some((tag, _)) if tag == "!If" => "secret".to_owned(),
            Some((_, text)) => text,
            None => panic!("{function}: untagged resource {:?}", statement["Resource"]),
        });
    }
    targets
}

#[test]
fn each_function_may_touch_only_what_it_uses() {
    let t = template();
    let publishing = ["Table.Arn", "InboundQueue.Arn", "MediaQueue.Arn", "secret"];
    // The WeCom callback also queues 微信客服 pulls, and touches no table: the queues'
    // deduplication drops WeCom's retries.
    assert_eq!(
        policy_targets(&t, "WecomCallbackFunction"),
        ["InboundQueue.Arn", "MediaQueue.Arn", "KfPullQueue.Arn", "secret"]
    );
    // The 微信客服 puller queues a follow-on pull for a backlog longer than one run.
    assert_eq!(
        policy_targets(&t, "KfPullerFunction"),
        ["Table.Arn", "InboundQueue.Arn", "MediaQueue.Arn", "KfPullQueue.Arn", "secret"]
    );
    assert_eq!(policy_targets(&t, "OaCallbackFunction"), publishing);
    // The AI bot's finished streams read the answer's images.
    assert_eq!(
        policy_targets(&t, "WecomAibotFunction"),
        ["Table.Arn", "InboundQueue.Arn", "MediaQueue.Arn", "${MediaBucket.Arn}/media/*", "MediaBucket.Arn", "secret"]
    );
    assert_eq!(policy_targets(&t, "IlinkPollerFunction"), publishing);
    assert_eq!(
        policy_targets(&t, "MediaFunction"),
        ["Table.Arn", "${MediaBucket.Arn}/media/*", "MediaBucket.Arn", "InboundQueue.Arn", "MediaQueue.Arn", "secret"]
    );
    assert_eq!(
        policy_targets(&t, "DispatcherFunction"),
        [
            "Table.Arn",
            "OutboundQueue.Arn",
            "InboundQueue.Arn",
            "InboundDeadLetterQueue.Arn",
            "BotQueue.Arn",
            "${MediaBucket.Arn}/media/*",
            "MediaBucket.Arn",
            "secret"
        ]
    );
    assert_eq!(
        policy_targets(&t, "SenderFunction"),
        [
            "Table.Arn",
            "OutboundQueue.Arn",
            "OutboundDeadLetterQueue.Arn",
            "${MediaBucket.Arn}/media/*",
            "MediaBucket.Arn",
            "secret"
        ]
    );
    // Each function that reads or writes media knows the bucket.
    for function in ["MediaFunction", "DispatcherFunction", "SenderFunction", "WecomAibotFunction"] {
        let variables = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        assert!(variables.get("WXBRIDGE_MEDIA_BUCKET").is_some(), "{function} has no WXBRIDGE_MEDIA_BUCKET");
    }
    let events = &resource(&t, "SenderFunction")["Properties"]["Events"]["Outbound"]["Properties"];
    assert_eq!(events["FunctionResponseTypes"][0], "ReportBatchItemFailures");
    assert_eq!(number(&events["BatchSize"]), 10);
    // One inbound message per invocation: a conversation's later messages wait in the queue
    // (burning no receives) while an earlier one is pending.
    let events = &resource(&t, "DispatcherFunction")["Properties"]["Events"]["Inbound"]["Properties"];
    assert_eq!(number(&events["BatchSize"]), 1);
}

#[tokio::test]
async fn the_config_loads_from_a_secrets_manager_secret() {
    let stack = Stack::new().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let name = format!("{}/config", stack.names.table);
    let document = format!(
        r#"{{"wecom": [{{"app": "hr", "corp_id": "{WECOM_CORP_ID}", "agent_id": 1000002, "token": "{WECOM_TOKEN}", "encoding_aes_key": "{WECOM_AES_KEY}"}}]}}"#
    );
    secrets.create_secret().name(&name).secret_string(document).send().await.unwrap();

    let env = Env::from_vars([("WXBRIDGE_CONFIG_SECRET", name.clone())]);
    let config = shared::adapters::aws::load_config(&env, &stack.sdk).await.unwrap();
    assert_eq!(config.wecom_app("hr").unwrap().corp_id, WECOM_CORP_ID);

    let missing = Env::from_vars([("WXBRIDGE_CONFIG_SECRET", "no/such/secret".to_owned())]);
    let err = shared::adapters::aws::load_config(&missing, &stack.sdk).await.unwrap_err().to_string();
    assert!(err.contains("no/such/secret"), "{err}");

    // Deployed, a bot over plain http:// is refused, naming the field; https:// is fine.
    for (base_url, refused) in [("http://10.0.0.7:11434", true), ("https://llm.example.com", false)] {
        let name = format!("{}/config-{}", stack.names.table, if refused { "http" } else { "https" });
        let document = format!(
            r#"{{"bots": {{"default": {{"kind": "openai", "base_url": "{base_url}", "model": "m", "api_key": "k"}}}}}}"#
        );
        secrets.create_secret().name(&name).secret_string(document).send().await.unwrap();
        let env = Env::from_vars([("WXBRIDGE_CONFIG_SECRET", name)]);
        match shared::adapters::aws::load_config(&env, &stack.sdk).await {
            Err(err) if refused => {
                let err = err.to_string();
                assert!(err.contains("bots.default.base_url") && err.contains("https://"), "{err}");
            }
            Ok(_) if !refused => {}
            other => panic!("{base_url}: {:?}", other.map(|_| ()).map_err(|e| e.to_string())),
        }
    }
}

fn resources_of_type<'a>(template: &'a Yaml, kind: &str) -> Vec<(String, &'a Yaml)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(name, r)| (name.as_str().unwrap().to_owned(), r))
        .collect()
}

/// What each alarm watches: (metric name, the `!Ref`/`!GetAtt` target of its dimension).
fn alarms(template: &Yaml) -> Vec<(String, Option<String>)> {
    resources_of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|(name, alarm)| {
            let props = &alarm["Properties"];
            assert!(tagged(&props["AlarmActions"][0]).is_some_and(|(_, t)| t == "AlarmTopic"), "{name} notifies");
            let target = tagged(&props["Dimensions"][0]["Value"]).map(|(_, text)| text);
            (props["MetricName"].as_str().unwrap().to_owned(), target)
        })
        .collect()
}

#[test]
fn every_dlq_and_every_function_has_an_alarm_and_a_paused_ilink_bot_raises_one() {
    let t = template();
    let alarms = alarms(&t);
    for (queue, _) in resources_of_type(&t, "AWS::SQS::Queue").iter().filter(|(n, _)| n.contains("DeadLetter")) {
        let watched = format!("{queue}.QueueName");
        assert!(
            alarms.iter().any(|(m, q)| m == "ApproximateNumberOfMessagesVisible" && q.as_deref() == Some(&watched)),
            "no depth alarm on {queue}"
        );
    }
    for (function, _) in resources_of_type(&t, "AWS::Serverless::Function") {
        assert!(
            alarms.iter().any(|(m, f)| m == "Errors" && f.as_deref() == Some(function.as_str())),
            "no error alarm on {function}"
        );
    }
    assert!(alarms.iter().any(|(m, _)| m == "IlinkPausedAccounts"), "no alarm on paused iLink bots");
    // The callbacks always answer (never a Lambda error): their failures and a wrong key raise
    // alarms of their own, and so do API Gateway's 5xx.
    for metric in ["CallbackFailed", "CallbackKeyRefused"] {
        assert!(alarms.iter().any(|(m, _)| m == metric), "no alarm on {metric}");
    }
    assert!(alarms.iter().any(|(m, api)| m == "5xx" && api.as_deref() == Some("HttpApi")), "no API Gateway 5xx alarm");
}

/// A queue's visibility timeout must be at least 6x its consumer's timeout (AWS's advice for
/// Lambda event sources; the dispatcher's is argued below), and every consumer reports partial
/// batch failures.
#[test]
fn queues_outlast_their_consumers_and_the_poller_runs_within_its_schedule() {
    let t = template();
    for (function, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        let props = &f["Properties"];
        assert_eq!(props["Runtime"], Yaml::Null, "{function}: the runtime comes from Globals");
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{function}");
        let timeout = number(&props["Timeout"]);
        for event in props["Events"].as_mapping().unwrap().values().filter(|e| e["Type"] == "SQS") {
            let (_, queue) = tagged(&event["Properties"]["Queue"]).unwrap();
            let queue = queue.trim_end_matches(".Arn");
            let visibility = number(&resource(&t, queue)["Properties"]["VisibilityTimeout"]);
            if function == "KfPullerFunction" {
                // A pull is idempotent (item markers, the cursor's version): a crashed run's
                // request returns just after the timeout, holding its account's group no longer.
                assert!(visibility > timeout, "{queue}: visibility {visibility} s within {function}'s {timeout} s");
            } else if function == "MediaFunction" {
                // The media step sets its own short backoff on a failed fetch; a crashed run's
                // record returns just after the timeout, while an AI bot's URL may still work.
                assert!(visibility > timeout, "{queue}: visibility {visibility} s within {function}'s {timeout} s");
            } else if function == "DispatcherFunction" {
                // Agents take minutes: the dispatcher's record comes back just after its timeout
                // (the bot-call lease, not the visibility timeout, keeps the agent from running twice).
                assert!(visibility > timeout, "{queue}: visibility {visibility} s within {function}'s {timeout} s");
                let longest = shared::core::bot::MAX_BOT_TIMEOUT.as_secs() + 15;
                assert!(timeout >= longest, "{function}'s {timeout} s is shorter than the longest bot call");
            } else {
                assert!(visibility >= 6 * timeout, "{queue}: visibility {visibility} s < 6 x {function}'s {timeout} s");
            }
            assert_eq!(event["Properties"]["FunctionResponseTypes"][0], "ReportBatchItemFailures", "{function}");
        }
    }
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"][0], "arm64");
    let poller = &resource(&t, "IlinkPollerFunction")["Properties"];
    assert_eq!(poller["Events"]["EveryMinute"]["Properties"]["Schedule"], "rate(1 minute)");
    assert!(number(&poller["Timeout"]) <= 60, "the poller's run ends before the next one starts");
    let oa = &resource(&t, "OaCallbackFunction")["Properties"];
    assert!(number(&oa["Timeout"]) * 1000 > 8_000, "an OA delivery (held up to 8 s) ends before the function");
    // A live sender's claim must outlast its invocation, or another sender takes it over while
    // the first may still send.
    let sender = number(&resource(&t, "SenderFunction")["Properties"]["Timeout"]);
    assert!(sender <= shared::services::sender::SEND_LEASE.as_secs(), "the sender's {sender} s outlasts its claim");
}
