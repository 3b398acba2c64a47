//! Organizations and their memberships, invitations and the JWKS.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::*;
use crate::fake::{FakeClerk, FakeClerkConfig, seed};

/// A fake over 300 synthetic users, and one of its organizations with several members.
async fn seeded() -> (FakeClerk, String, reqwest::Client, Value) {
    let (fake, base, client) =
        start(FakeClerkConfig::new(KEY), seed::synthetic_users(300, 5)).await;
    let org = fake
        .organizations()
        .into_iter()
        .max_by_key(|org| org["id"].as_str().map(str::to_owned))
        .expect("the seed names organizations");
    (fake, base, client, org)
}

fn org_id(org: &Value) -> &str {
    org["id"].as_str().expect("id")
}

#[tokio::test]
async fn organizations_are_derived_from_the_users_deterministically() {
    let users = seed::synthetic_users(300, 5);
    let fake = FakeClerk::new(FakeClerkConfig::new(KEY), users.clone());
    let orgs = fake.organizations();
    assert_eq!(
        orgs,
        FakeClerk::new(FakeClerkConfig::new(KEY), users.clone()).organizations()
    );
    let named: std::collections::BTreeSet<&str> = users
        .iter()
        .flat_map(|u| {
            u["public_metadata"]["organization_ids"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        orgs.iter()
            .map(org_id)
            .collect::<std::collections::BTreeSet<_>>(),
        named
    );
    let slugs: std::collections::HashSet<&str> =
        orgs.iter().filter_map(|o| o["slug"].as_str()).collect();
    assert_eq!(slugs.len(), orgs.len(), "slugs are unique");
    for org in &orgs {
        assert_eq!(org["object"], "organization");
        assert!(org["private_metadata"].is_object() && org["public_metadata"].is_object());
        let founder = fake
            .user(org["created_by"].as_str().expect("created_by"))
            .expect("user");
        assert!(org["created_at"].as_i64() < founder["created_at"].as_i64());
    }
}

#[tokio::test]
async fn get_organization_by_id_or_slug_with_members_count() {
    let (fake, base, client, org) = seeded().await;
    let id = org_id(&org);
    let (status, _, by_id) = get(&client, &format!("{base}/organizations/{id}")).await;
    assert_eq!((status, &by_id), (200, &org));
    assert!(by_id.get("members_count").is_none(), "only when asked");
    let slug = org["slug"].as_str().expect("slug");
    let url = format!("{base}/organizations/{slug}?include_members_count=true");
    let (status, _, by_slug) = get(&client, &url).await;
    assert_eq!(status, 200);
    let (_, _, count) = get(&client, &format!("{base}/users/count?organization_id={id}")).await;
    assert_eq!(by_slug["members_count"], count["total_count"]);
    assert!(by_slug["members_count"].as_u64() > Some(1));
    let (status, _, error) = get(&client, &format!("{base}/organizations/org_nope")).await;
    assert_eq!(
        (status, first_error_code(&error)),
        (404, "resource_not_found")
    );
    assert_eq!(
        fake.stats().route_requests["GET /v1/organizations/{organization_id}"],
        3
    );
}

#[tokio::test]
async fn memberships_page_filter_and_agree_with_the_users() {
    let (fake, base, client, org) = seeded().await;
    let id = org_id(&org);
    let memberships = |query: &str| format!("{base}/organizations/{id}/memberships?{query}");
    let (status, _, all) = get(&client, &memberships("limit=500")).await;
    assert_eq!(status, 200);
    let data = all["data"].as_array().expect("data");
    let (_, _, members) = get(
        &client,
        &format!("{base}/users?organization_id={id}&limit=500"),
    )
    .await;
    // Same members, same default order (newest first), and total_count counts them all.
    let member_ids: Vec<&Value> = data
        .iter()
        .map(|m| &m["public_user_data"]["user_id"])
        .collect();
    let user_ids: Vec<&Value> = members
        .as_array()
        .expect("users")
        .iter()
        .map(|u| &u["id"])
        .collect();
    assert_eq!(member_ids, user_ids);
    assert_eq!(all["total_count"], json!(data.len()));
    let admins: Vec<&Value> = data.iter().filter(|m| m["role"] == "org:admin").collect();
    assert_eq!(admins.len(), 1);
    assert_eq!(admins[0]["public_user_data"]["user_id"], org["created_by"]);
    let first = &data[0];
    assert_eq!(first["object"], "organization_membership");
    assert!(
        first["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("orgmem_"))
    );
    assert_eq!(first["organization"], org);
    assert!(first["private_metadata"].is_object());
    let user = fake
        .user(first["public_user_data"]["user_id"].as_str().expect("id"))
        .expect("user");
    assert_eq!(first["public_user_data"]["first_name"], user["first_name"]);
    assert_eq!(first["created_at"], user["created_at"]);
    // Paging keeps total_count; filters narrow it.
    let (_, _, page) = get(&client, &memberships("limit=1&offset=1")).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["data"][0]["id"], data[1]["id"]);
    assert_eq!(page["total_count"], all["total_count"]);
    let (_, _, oldest) = get(&client, &memberships("order_by=created_at&limit=1")).await;
    let url = format!("{base}/users?organization_id={id}&order_by=created_at&limit=1");
    let (_, _, oldest_user) = get(&client, &url).await;
    assert_eq!(
        oldest["data"][0]["public_user_data"]["user_id"],
        oldest_user[0]["id"]
    );
    let (_, _, admin) = get(&client, &memberships("role=org:admin")).await;
    assert_eq!(admin["total_count"], 1);
    let picked = data[1]["public_user_data"]["user_id"].as_str().expect("id");
    let (_, _, one) = get(&client, &memberships(&format!("user_id={picked}"))).await;
    assert_eq!(one["data"][0]["id"], data[1]["id"]);
    for bad in ["limit=0", "limit=501", "offset=-1", "order_by=height"] {
        let (status, _, error) = get(&client, &memberships(bad)).await;
        assert_eq!(
            (status, first_error_code(&error)),
            (422, "form_param_value_invalid"),
            "{bad}"
        );
    }
    let (status, _, _) = get(
        &client,
        &format!("{base}/organizations/org_nope/memberships"),
    )
    .await;
    assert_eq!(status, 404);
    // A membership filter on user_id fetches no user: only users reads count as such.
    assert_eq!(fake.stats().ids_requested, 0);
}

#[tokio::test]
async fn organization_updates_and_metadata_writes() {
    let (fake, base, client, org) = seeded().await;
    let id = org_id(&org);
    let url = format!("{base}/organizations/{id}");
    let body = json!({"name": "Renamed", "slug": "renamed", "private_metadata": {"new": 1}});
    let (status, _, updated) = send(&client, Method::PATCH, &url, Some(body)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (&updated["name"], &updated["slug"]),
        (&json!("Renamed"), &json!("renamed"))
    );
    assert_eq!(updated["private_metadata"], json!({"new": 1}), "replaced");
    assert_eq!(
        updated["public_metadata"], org["public_metadata"],
        "absent: kept"
    );
    assert!(updated["updated_at"].as_i64() > org["updated_at"].as_i64());
    assert_eq!(fake.organization("renamed"), Some(updated.clone()));
    let (_, _, members) = get(&client, &format!("{url}/memberships?limit=1")).await;
    assert_eq!(
        members["data"][0]["organization"], updated,
        "memberships embed it"
    );

    let merge =
        json!({"public_metadata": {"tier": {"level": 2}}, "private_metadata": {"new": null}});
    let (status, _, merged) = send(
        &client,
        Method::PATCH,
        &format!("{url}/metadata"),
        Some(merge),
    )
    .await;
    assert_eq!(status, 200);
    let mut public = org["public_metadata"].clone();
    public["tier"] = json!({"level": 2});
    assert_eq!(merged["public_metadata"], public);
    assert_eq!(merged["private_metadata"], json!({}));
    let replace = json!({"public_metadata": {"only": true}});
    let (status, _, replaced) = send(
        &client,
        Method::PUT,
        &format!("{url}/metadata"),
        Some(replace),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(replaced["public_metadata"], json!({"only": true}));
    assert_eq!(fake.organization(id), Some(replaced));

    let other = fake
        .organizations()
        .into_iter()
        .find(|o| o["id"] != id)
        .expect("two orgs");
    let taken = json!({"slug": other["slug"]});
    let cases = [
        (taken, 422, "form_identifier_exists"),
        (
            json!({"slug": "Not A Slug"}),
            422,
            "form_param_value_invalid",
        ),
        (json!({"name": ""}), 422, "form_param_value_invalid"),
        (json!({"name": 5}), 422, "form_param_format_invalid"),
        (json!({"members": 5}), 422, "form_param_unknown"),
    ];
    let before = fake.organization(id);
    for (body, status, code) in cases {
        let (got, _, error) = send(&client, Method::PATCH, &url, Some(body.clone())).await;
        assert_eq!((got, first_error_code(&error)), (status, code), "{body}");
    }
    assert_eq!(fake.organization(id), before);
    let missing = format!("{base}/organizations/org_nope");
    for (method, path) in [
        (Method::PATCH, missing.clone()),
        (Method::PUT, format!("{missing}/metadata")),
    ] {
        let (status, _, _) = send(&client, method, &path, Some(json!({}))).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn invitations_are_created_pending_and_kept() {
    let (fake, base, client) = start(FakeClerkConfig::new(KEY), five_users()).await;
    let url = format!("{base}/invitations");
    let body = json!({
        "email_address": "new@example.com",
        "public_metadata": {"plan": "pro"},
        "redirect_url": "https://app.example.com/welcome",
        "expires_in_days": 7,
    });
    let (status, _, invitation) = send(&client, Method::POST, &url, Some(body)).await;
    assert_eq!(status, 200, "{invitation}");
    assert_eq!(invitation["object"], "invitation");
    assert_eq!(invitation["status"], "pending");
    assert_eq!(invitation["revoked"], false);
    assert_eq!(invitation["email_address"], "new@example.com");
    assert_eq!(invitation["public_metadata"], json!({"plan": "pro"}));
    assert!(
        invitation["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("inv_"))
    );
    assert!(
        invitation["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://app.example.com/welcome?"))
    );
    let created = invitation["created_at"].as_i64().expect("created_at");
    assert_eq!(
        invitation["expires_at"].as_i64(),
        Some(created + 7 * 24 * 3600 * 1000)
    );
    assert_eq!(fake.invitations(), vec![invitation]);
    let cases = [
        (
            json!({"email_address": "NEW@example.com"}),
            400,
            "duplicate_record",
        ),
        (
            json!({"email_address": "ada@example.com"}),
            422,
            "form_identifier_exists",
        ),
        (json!({"public_metadata": {}}), 422, "form_param_missing"),
        (
            json!({"email_address": "not-an-address"}),
            422,
            "form_param_format_invalid",
        ),
        (
            json!({"email_address": "x@example.com", "expires_in_days": 0}),
            422,
            "form_param_value_invalid",
        ),
        (
            json!({"email_address": "x@example.com", "role": "admin"}),
            422,
            "form_param_unknown",
        ),
    ];
    for (body, status, code) in cases {
        let (got, _, error) = send(&client, Method::POST, &url, Some(body.clone())).await;
        assert_eq!((got, first_error_code(&error)), (status, code), "{body}");
    }
    let again = json!({"email_address": "new@example.com", "ignore_existing": true});
    assert_eq!(send(&client, Method::POST, &url, Some(again)).await.0, 200);
    assert_eq!(fake.invitations().len(), 2);
    assert_eq!(fake.stats().route_requests["POST /v1/invitations"], 8);
}

#[tokio::test]
async fn jwks_serves_an_rsa_key_outside_the_instance_budget() {
    let mut config = FakeClerkConfig::new(KEY);
    config.rate_limit = Some((1, Duration::from_secs(30)));
    let (fake, base, client) = start(config, five_users()).await;
    assert_eq!(get(&client, &format!("{base}/users/user_a")).await.0, 200);
    for _ in 0..5 {
        let (status, _, jwks) = get(&client, &format!("{base}/jwks")).await;
        assert_eq!(status, 200);
        let key = &jwks["keys"][0];
        assert_eq!(
            (&key["kty"], &key["alg"], &key["use"]),
            (&json!("RSA"), &json!("RS256"), &json!("sig"))
        );
        assert_eq!(key["e"], "AQAB");
        let modulus = key["n"].as_str().expect("n");
        assert_eq!(modulus.len(), 342, "2048 bits in unpadded base64url");
        assert!(
            key["kid"]
                .as_str()
                .is_some_and(|kid| kid.starts_with("ins_"))
        );
    }
    // The budget of one is spent by the user read alone.
    assert_eq!(get(&client, &format!("{base}/users/user_a")).await.0, 429);
    let stats = fake.stats();
    assert_eq!(
        (stats.max_in_window, stats.route_requests["GET /v1/jwks"]),
        (1, 5)
    );
    // It still wants the key.
    let anonymous = client
        .get(format!("{base}/jwks"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), 401);
}
