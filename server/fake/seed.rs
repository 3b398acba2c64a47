//! Deterministic synthetic Clerk users for tests, benchmarks and the demo mode.
//!
//! Same `(count, seed)`, same users. Everything identifying is fictitious: emails use only
//! the reserved `example.com/.org/.net` domains, phones are `+1555…`, images live on
//! `img.example.com`. Timestamps spread over the two years before a fixed instant
//! ([`SEED_NOW_MS`]) so the output never depends on the clock.

use std::collections::HashSet;

use serde_json::{Value, json};

/// The instant the synthetic users are generated "at": 2025-11-10T00:00:00Z in Unix ms.
pub const SEED_NOW_MS: i64 = 1_762_732_800_000;

/// Two years in milliseconds: how far back `created_at` goes.
const SPAN_MS: i64 = 2 * 365 * 24 * 3600 * 1000;

/// Given names drawn from.
const FIRST_NAMES: [&str; 24] = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Donald",
    "Hedy",
    "Tim",
    "Katherine",
    "Guido",
    "Sophie",
    "John",
    "Anita",
    "Niklaus",
    "Joan",
    "Bjarne",
    "Shafi",
    "Leslie",
];

/// Family names drawn from.
const LAST_NAMES: [&str; 24] = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Knuth",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "van Rossum",
    "Wilson",
    "McCarthy",
    "Borg",
    "Wirth",
    "Clarke",
    "Stroustrup",
    "Goldwasser",
    "Lamport",
];

/// Reserved, never-real email domains.
const DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

/// Plans put in `public_metadata.plan`.
const PLANS: [&str; 4] = ["free", "free", "pro", "enterprise"];

/// Characters of Clerk's base62 id suffixes.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `count` realistic, deterministic Clerk User objects with unique ids, emails, usernames
/// and phone numbers; about 1% banned, some with null username, phone, external id,
/// private metadata or activity timestamps, and a few sharing a `created_at`.
pub fn synthetic_users(count: usize, seed: u64) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ids = HashSet::with_capacity(count);
    let org_ids: Vec<String> = (0..(count / 50).clamp(3, 500))
        .map(|_| clerk_id(&mut rng, "org_"))
        .collect();
    let mut previous_created_at = SEED_NOW_MS - SPAN_MS / 2;
    (0..count)
        .map(|n| {
            let id = loop {
                let id = clerk_id(&mut rng, "user_");
                if ids.insert(id.clone()) {
                    break id;
                }
            };
            // About 2% share their predecessor's creation instant, as bulk imports do.
            let created_at = if rng.u8(0..50) == 0 {
                previous_created_at
            } else {
                SEED_NOW_MS - rng.i64(0..SPAN_MS)
            };
            previous_created_at = created_at;
            user(&mut rng, n, id, created_at, &org_ids)
        })
        .collect()
}

/// The `n`th user; `n` makes emails, usernames and phone numbers unique.
fn user(
    rng: &mut fastrand::Rng,
    n: usize,
    id: String,
    created_at: i64,
    org_ids: &[String],
) -> Value {
    let first = FIRST_NAMES[rng.usize(..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.usize(..LAST_NAMES.len())];
    let handle = format!("{first}.{last}")
        .to_lowercase()
        .replace([' ', '-'], "");
    let emails: Vec<Value> = (0..rng.usize(1..=2))
        .map(|i| {
            let domain = DOMAINS[rng.usize(..DOMAINS.len())];
            let address = format!(
                "{handle}{}@{domain}",
                if i == 0 {
                    n.to_string()
                } else {
                    format!("{n}.alt")
                }
            );
            let status = if rng.u8(0..10) == 0 {
                "unverified"
            } else {
                "verified"
            };
            json!({
                "id": clerk_id(rng, "idn_"),
                "object": "email_address",
                "email_address": address,
                "reserved": false,
                "verification": otp_verification(status, "email_code", created_at),
                "linked_to": [],
                "created_at": created_at,
                "updated_at": created_at,
            })
        })
        .collect();
    let phones: Vec<Value> = if rng.u8(0..10) < 4 {
        vec![json!({
            "id": clerk_id(rng, "idn_"),
            "object": "phone_number",
            "phone_number": format!("+1555{:07}", n % 10_000_000),
            "reserved": false,
            "reserved_for_second_factor": false,
            "default_second_factor": false,
            "verification": otp_verification("verified", "phone_code", created_at),
            "linked_to": [],
            "backup_codes": null,
            "created_at": created_at,
            "updated_at": created_at,
        })]
    } else {
        Vec::new()
    };
    let orgs: Vec<&String> = (0..rng.usize(0..=2))
        .map(|_| &org_ids[rng.usize(..org_ids.len())])
        .collect();
    let age = SEED_NOW_MS - created_at;
    let updated_at = created_at + rng.i64(0..=age);
    let last_sign_in_at = (rng.u8(0..10) < 8).then(|| created_at + rng.i64(0..=age));
    let last_active_at = last_sign_in_at.map(|at| at + rng.i64(0..=SEED_NOW_MS - at));
    let has_image = rng.u8(0..10) < 3;
    let image_url = if has_image {
        format!("https://img.example.com/{id}.png")
    } else {
        "https://img.example.com/default-avatar.png".to_owned()
    };
    let mut user = json!({
        "id": id,
        "object": "user",
        "external_id": (rng.u8(0..10) < 3).then(|| format!("ext_{n:08}")),
        "username": (rng.u8(0..10) < 6).then(|| format!("{handle}{n}")),
        "first_name": first,
        "last_name": last,
        "profile_image_url": image_url,
        "image_url": image_url,
        "has_image": has_image,
        "primary_email_address_id": emails[0]["id"],
        "primary_phone_number_id": phones.first().map(|p| p["id"].clone()),
        "primary_web3_wallet_id": null,
        "email_addresses": emails,
        "phone_numbers": phones,
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "enterprise_accounts": [],
        "public_metadata": {"plan": PLANS[rng.usize(..PLANS.len())], "organization_ids": orgs},
        "private_metadata": (rng.u8(0..10) < 7).then(|| json!({"internal_score": rng.u32(0..1000)})),
        "unsafe_metadata": {},
        "banned": rng.u8(0..100) == 0,
        "locked": false,
        "password_enabled": rng.u8(0..10) < 7,
        "two_factor_enabled": rng.u8(0..10) < 2,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100,
        "created_at": created_at,
        "updated_at": updated_at,
        "last_sign_in_at": last_sign_in_at,
        "last_active_at": last_active_at,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "legal_accepted_at": null,
    });
    // Derived after the fact so the random draws above keep their order (same seed, same
    // users as before these fields existed): two-factor users use a TOTP app since signing up.
    if user["two_factor_enabled"] == true {
        user["totp_enabled"] = Value::Bool(true);
        user["backup_code_enabled"] = Value::Bool(true);
        user["mfa_enabled_at"] = Value::from(created_at);
    }
    user
}

/// A one-time-code verification as Clerk reports it (`verification_otp`).
fn otp_verification(status: &str, strategy: &str, created_at: i64) -> Value {
    let attempts = (status == "verified").then_some(1);
    json!({
        "object": "verification_otp",
        "status": status,
        "strategy": strategy,
        "attempts": attempts,
        "expire_at": created_at + 10 * 60 * 1000,
    })
}

/// A Clerk-style id: `prefix` and 27 base62 characters.
pub(super) fn clerk_id(rng: &mut fastrand::Rng, prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 27);
    id.push_str(prefix);
    id.extend((0..27).map(|_| char::from(BASE62[rng.usize(..BASE62.len())])));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_users_other_seed_other_users() {
        let users = synthetic_users(200, 7);
        assert_eq!(users, synthetic_users(200, 7));
        assert_ne!(users, synthetic_users(200, 8));
        assert_eq!(users.len(), 200);
    }

    #[test]
    fn ids_emails_and_usernames_are_unique_and_well_formed() {
        let users = synthetic_users(10_000, 1);
        let ids: HashSet<&str> = users.iter().filter_map(|u| u["id"].as_str()).collect();
        assert_eq!(ids.len(), users.len());
        for id in &ids {
            let suffix = id.strip_prefix("user_").expect("user_ prefix");
            assert_eq!(suffix.len(), 27);
            assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        let emails: Vec<&str> = users
            .iter()
            .flat_map(|u| u["email_addresses"].as_array().into_iter().flatten())
            .filter_map(|e| e["email_address"].as_str())
            .collect();
        assert_eq!(emails.iter().collect::<HashSet<_>>().len(), emails.len());
        assert!(
            emails
                .iter()
                .all(|e| DOMAINS.iter().any(|d| e.ends_with(&format!("@{d}"))))
        );
        let usernames: Vec<&str> = users
            .iter()
            .filter_map(|u| u["username"].as_str())
            .collect();
        assert_eq!(
            usernames.iter().collect::<HashSet<_>>().len(),
            usernames.len()
        );
    }

    #[test]
    fn users_look_like_clerk_users() {
        let users = synthetic_users(2_000, 3);
        let banned = users.iter().filter(|u| u["banned"] == true).count();
        assert!((1..=60).contains(&banned), "{banned} banned");
        assert!(users.iter().any(|u| u["username"].is_null()));
        assert!(users.iter().any(|u| u["last_active_at"].is_null()));
        for user in &users {
            assert_eq!(user["object"], "user");
            let created = user["created_at"].as_i64().expect("created_at");
            assert!((SEED_NOW_MS - SPAN_MS..=SEED_NOW_MS).contains(&created));
            assert!(user["updated_at"].as_i64().expect("updated_at") >= created);
            let primary = &user["primary_email_address_id"];
            assert!(
                user["email_addresses"]
                    .as_array()
                    .expect("emails")
                    .iter()
                    .any(|e| &e["id"] == primary)
            );
        }
    }
}
