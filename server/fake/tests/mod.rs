//! The fake Clerk exercised over real HTTP, as the broker's client will talk to it: shared
//! helpers here, the users reads in `endpoints`, the user writes in `writes`, organizations,
//! invitations and the JWKS in `orgs`, rate limits (instance and per endpoint) and faults in
//! `limits`.

mod endpoints;
mod limits;
mod orgs;
mod writes;

use std::time::Duration;

use serde_json::{Value, json};

use super::{FakeClerk, FakeClerkConfig};

const KEY: &str = "sk_test_fake";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A hand-made user with the fields the filters look at.
fn user(id: &str, first: &str, created_at: i64, extra: Value) -> Value {
    let mut user = json!({
        "id": id, "object": "user", "first_name": first, "last_name": "Test",
        "username": format!("{}_name", first.to_lowercase()),
        "email_addresses": [{"id": format!("idn_{id}"), "email_address": format!("{}@example.com", first.to_lowercase())}],
        "primary_email_address_id": format!("idn_{id}"),
        "phone_numbers": [], "public_metadata": {}, "banned": false,
        "created_at": created_at, "updated_at": created_at, "last_active_at": null,
    });
    if let (Some(user), Value::Object(extra)) = (user.as_object_mut(), extra) {
        user.extend(extra);
    }
    user
}

fn five_users() -> Vec<Value> {
    vec![
        user(
            "user_a",
            "Ada",
            1000,
            json!({"external_id": "ext_1", "last_active_at": 5000}),
        ),
        user(
            "user_b",
            "Bob",
            3000,
            json!({"banned": true, "public_metadata": {"organization_ids": ["org_1"]}}),
        ),
        user(
            "user_c",
            "Cy",
            2000,
            json!({"first_name": null, "last_active_at": 7000}),
        ),
        user(
            "user_d",
            "Dee",
            2000,
            json!({"phone_numbers": [{"id": "idn_p", "phone_number": "+15550001111"}]}),
        ),
        user(
            "user_e",
            "Eve",
            4000,
            json!({"public_metadata": {"organization_ids": ["org_1", "org_2"]}}),
        ),
    ]
}

/// A fake over `users`, its base URL and a client.
async fn start(config: FakeClerkConfig, users: Vec<Value>) -> (FakeClerk, String, reqwest::Client) {
    let fake = FakeClerk::new(config, users);
    let base = fake.spawn().await.expect("spawn");
    (fake, base, client())
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client.get(url).bearer_auth(KEY).send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&body).expect("json"),
    )
}

/// Sends `method url` with an optional JSON body; answers status, headers and JSON body.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client.request(method, url).bearer_auth(KEY);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&body).expect("json"),
    )
}

fn ids(body: &Value) -> Vec<&str> {
    body.as_array()
        .expect("array")
        .iter()
        .map(|u| u["id"].as_str().expect("id"))
        .collect()
}

fn first_error_code(body: &Value) -> &str {
    body["errors"][0]["code"].as_str().expect("code")
}
