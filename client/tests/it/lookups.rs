//! Lookups through `Client`: values, precise errors, the caller's token and
//! the default deadline.

use std::time::Duration;

use clerk_broker_client::{Client, Code, pb::UserFilter};

use crate::harness::{Options, TOKEN, rate, start, token_policy};

#[tokio::test]
async fn get_batch_and_count_return_the_fakes_users() {
    let (upstream, broker) = start(Options::default()).await;
    let client = broker.client().await;
    let id = &upstream.ids[0];
    let user = client.get_user(id).await.unwrap();
    assert_eq!(&user.id, id);
    assert!(user.raw_json.contains(id.as_str()));

    let batch = client
        .batch_get_users([upstream.ids[1].as_str(), "user_doesnotexist", id])
        .await
        .unwrap();
    let found: Vec<_> = batch.users.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(found, [upstream.ids[1].as_str(), id.as_str()]);
    assert_eq!(batch.missing_user_ids, ["user_doesnotexist"]);

    assert_eq!(
        client.count_users(UserFilter::default()).await.unwrap(),
        1_000
    );
    let one = UserFilter {
        user_ids: vec![id.clone()],
        ..Default::default()
    };
    assert_eq!(client.count_users(one).await.unwrap(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn errors_carry_their_status_codes() {
    let (_upstream, broker) = start(Options::default()).await;
    let client = broker.client().await;
    let missing = client.get_user("user_doesnotexist").await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound), "{missing}");
    assert!(missing.to_string().starts_with("NOT_FOUND: "), "{missing}");
    let bad = client.get_user("not an id!").await.unwrap_err();
    assert_eq!(bad.code(), Some(Code::InvalidArgument), "{bad}");
    broker.stop().await;

    let url = "ftp://127.0.0.1:1";
    let error = Client::connect(url).await.unwrap_err();
    assert!(error.to_string().contains("http://"), "{error}");
}

#[tokio::test]
async fn the_token_is_sent_on_every_call_and_never_shown() {
    let options = Options {
        policy: token_policy(),
        ..Options::default()
    };
    let (upstream, broker) = start(options).await;
    let id = &upstream.ids[0];

    let anonymous = broker.client().await;
    let refused = anonymous.get_user(id).await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused}");

    let caller = Client::builder(broker.url())
        .token(TOKEN)
        .connect()
        .await
        .unwrap();
    assert_eq!(&caller.get_user(id).await.unwrap().id, id);
    assert!(!format!("{caller:?}").contains(TOKEN));

    let wrong = Client::builder(broker.url())
        .token("wrong-token-value")
        .connect()
        .await
        .unwrap();
    let error = wrong.get_user(id).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::Unauthenticated));
    assert!(!error.to_string().contains("wrong-token-value"), "{error}");
    broker.stop().await;
}

#[tokio::test]
async fn the_default_deadline_turns_a_long_wait_into_resource_exhausted_with_retry_info() {
    // One request per 10 s: the second lookup cannot be served within a
    // 300 ms deadline, and the broker says so at once with RetryInfo.
    let options = Options {
        rate: rate(1, Duration::from_secs(10)),
        ..Options::default()
    };
    let (upstream, broker) = start(options).await;
    let client = Client::builder(broker.url())
        .deadline(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    client.get_user(&upstream.ids[0]).await.unwrap();
    let started = std::time::Instant::now();
    let error = client.get_user(&upstream.ids[1]).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::ResourceExhausted), "{error}");
    let retry_after = error.retry_after().expect("RetryInfo");
    assert!(
        retry_after > Duration::from_secs(5) && retry_after <= Duration::from_secs(11),
        "{retry_after:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    broker.stop().await;
}
