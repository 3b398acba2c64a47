//! Every UserService RPC through generated clients, answered from the fake.

use std::collections::HashSet;

use clerk_broker::pb::{
    BatchGetUsersRequest, CountUsersRequest, GetUserRequest, ListUsersRequest, UserFilter,
};
use tonic::Code;

use crate::harness::{Harness, Options};

#[tokio::test]
async fn get_user_returns_the_user_and_its_raw_object() {
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let id = harness.ids[3].clone();
    let user = client
        .get_user(GetUserRequest {
            user_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let expected = harness.fake.user(&id).unwrap();
    assert_eq!(user.id, id);
    assert_eq!(user.first_name.as_deref(), expected["first_name"].as_str());
    assert_eq!(
        user.created_at.unwrap().seconds,
        expected["created_at"].as_i64().unwrap() / 1000
    );
    let raw: serde_json::Value = serde_json::from_str(&user.raw_json).unwrap();
    assert_eq!(raw, expected);

    let missing = client
        .get_user(GetUserRequest {
            user_id: "user_doesnotexist".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("user_doesnotexist"),
        "{missing:?}"
    );
    assert_eq!(harness.fake.stats().rate_limited, 0);
}

#[tokio::test]
async fn batch_get_finds_many_in_few_requests_and_lists_the_missing() {
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let mut ids: Vec<String> = harness.ids[..250].to_vec();
    ids.insert(10, "user_missing_one".into());
    ids.push(harness.ids[0].clone()); // a duplicate is answered once
    harness.fake.reset_stats();
    let reply = client
        .batch_get_users(BatchGetUsersRequest {
            user_ids: ids.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let found: Vec<&str> = reply.users.iter().map(|user| user.id.as_str()).collect();
    let expected: Vec<&str> = harness.ids[..250].iter().map(String::as_str).collect();
    assert_eq!(found, expected, "found users come in request order");
    assert_eq!(reply.missing_user_ids, ["user_missing_one"]);
    // 251 distinct ids: three list requests of at most 100 ids.
    let stats = harness.fake.stats();
    assert_eq!((stats.requests, stats.list_requests), (3, 3));
}

#[tokio::test]
async fn count_applies_the_filter() {
    let harness = Harness::start(Options::default()).await;
    let mut client = harness.users().await;
    let all = client
        .count_users(CountUsersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .total_count;
    assert_eq!(all, 1_000);
    let banned = client
        .count_users(CountUsersRequest {
            filter: Some(UserFilter {
                banned: Some(true),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .total_count;
    assert!(banned < 100, "{banned}");
    let two = client
        .count_users(CountUsersRequest {
            filter: Some(UserFilter {
                user_ids: harness.ids[..2].to_vec(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .total_count;
    assert_eq!(two, 2);
}

/// Reads a whole export and returns the ids and the tokens, message by message.
async fn read_export(
    harness: &Harness,
    request: ListUsersRequest,
    max_messages: usize,
) -> (Vec<String>, Vec<String>) {
    let mut client = harness.users().await;
    let mut stream = client.list_users(request).await.unwrap().into_inner();
    let (mut ids, mut tokens) = (Vec::new(), Vec::new());
    while tokens.len() < max_messages {
        let Some(message) = stream.message().await.unwrap() else {
            break;
        };
        assert!(!message.users.is_empty());
        ids.extend(message.users.into_iter().map(|user| user.id));
        tokens.push(message.resume_token);
    }
    (ids, tokens)
}

#[tokio::test]
async fn list_streams_everyone_once_in_order_at_full_pages() {
    let harness = Harness::start(Options {
        users: 1_200,
        ..Options::default()
    })
    .await;
    harness.fake.reset_stats();
    let request = ListUsersRequest {
        order_by: "+created_at".into(),
        page_size: 100,
        ..Default::default()
    };
    let (ids, tokens) = read_export(&harness, request, usize::MAX).await;
    assert_eq!(tokens.len(), 12, "1200 users in messages of 100");
    assert_eq!(ids.len(), 1_200);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        1_200,
        "no repeats"
    );
    let created: Vec<i64> = ids
        .iter()
        .map(|id| {
            harness.fake.user(id).unwrap()["created_at"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] <= pair[1]),
        "ascending order"
    );
    let stats = harness.fake.stats();
    assert_eq!(stats.list_requests, 3, "pages of 500: 500 + 500 + 200");
    assert_eq!(stats.count_requests, 0);
}

#[tokio::test]
async fn a_resumed_export_continues_exactly_after_the_token() {
    let harness = Harness::start(Options::default()).await;
    let request = ListUsersRequest {
        order_by: "-created_at".into(),
        page_size: 70,
        ..Default::default()
    };
    let (all, _) = read_export(&harness, request.clone(), usize::MAX).await;
    let (first, tokens) = read_export(&harness, request, 4).await;
    assert_eq!(first.len(), 280);
    let resumed = ListUsersRequest {
        resume_token: tokens.last().unwrap().clone(),
        page_size: 500,
        ..Default::default()
    };
    let (rest, _) = read_export(&harness, resumed, usize::MAX).await;
    let union: Vec<String> = first.into_iter().chain(rest).collect();
    assert_eq!(union, all);
}

#[tokio::test]
async fn max_users_stops_the_export_early() {
    let harness = Harness::start(Options::default()).await;
    harness.fake.reset_stats();
    let request = ListUsersRequest {
        page_size: 3,
        max_users: 7,
        ..Default::default()
    };
    let (ids, tokens) = read_export(&harness, request, usize::MAX).await;
    assert_eq!((ids.len(), tokens.len()), (7, 3));
    assert_eq!(harness.fake.stats().list_requests, 1);
}
