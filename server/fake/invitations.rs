//! `POST /v1/invitations`: creates a `pending` Invitation object and keeps it in memory.
//!
//! As Clerk does, an address that already has a pending invitation, or that belongs to a user,
//! is refused unless `ignore_existing` is true. No email is ever sent.

use serde_json::{Value, json};

use super::body::{Body, Rejection};
use super::seed::clerk_id;
use super::store::Store;

/// Every parameter `POST /v1/invitations` accepts.
const PARAMS: &[&str] = &[
    "email_address",
    "public_metadata",
    "redirect_url",
    "notify",
    "ignore_existing",
    "expires_in_days",
    "template_slug",
];

/// Clerk's default invitation lifetime, in days.
const DEFAULT_EXPIRY_DAYS: i64 = 30;

/// One day in ms.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// The invitations created, oldest first.
#[derive(Default)]
pub(super) struct Invitations {
    /// Invitation objects.
    all: Vec<Value>,
}

impl Invitations {
    /// Every invitation, oldest first.
    pub(super) fn all(&self) -> &[Value] {
        &self.all
    }

    /// Creates an invitation from the request `bytes`, checking the address against the
    /// pending invitations and the `users`' email addresses.
    pub(super) fn create(&mut self, users: &Store, bytes: &[u8]) -> Result<Value, Rejection> {
        let body = Body::parse(bytes, PARAMS)?;
        let email = body
            .string("email_address")?
            .ok_or_else(|| Rejection::missing("email_address"))?;
        if !looks_like_email(&email) {
            return Err(Rejection::format("email_address", "a valid email address"));
        }
        let public_metadata = body.object("public_metadata")?.cloned().unwrap_or_default();
        let redirect_url = body.nullable_string("redirect_url")?.flatten();
        body.bool("notify")?;
        let ignore_existing = body.bool("ignore_existing")?.unwrap_or(false);
        let days = match body.nullable_int("expires_in_days")?.flatten() {
            None => DEFAULT_EXPIRY_DAYS,
            Some(days) if (1..=365).contains(&days) => days,
            Some(_) => {
                let long = "expires_in_days must be between 1 and 365";
                return Err(Rejection::value("expires_in_days", long));
            }
        };
        match body.string("template_slug")?.as_deref() {
            None | Some("invitation" | "waitlist_invitation") => {}
            Some(_) => {
                let long = "template_slug must be invitation or waitlist_invitation";
                return Err(Rejection::value("template_slug", long));
            }
        }
        let wanted = email.to_lowercase();
        if !ignore_existing {
            let pending = self.all.iter().any(|invitation| {
                invitation["status"] == "pending"
                    && invitation["email_address"].as_str().map(str::to_lowercase)
                        == Some(wanted.clone())
            });
            if pending {
                return Err(Rejection {
                    status: axum::http::StatusCode::BAD_REQUEST,
                    code: "duplicate_record",
                    message: "duplicate invitation",
                    long_message: format!("There is already a pending invitation for {email}"),
                    param: Some("email_address".to_owned()),
                });
            }
            let user_has_it = users
                .records()
                .any(|record| record.emails.iter().any(|e| e.to_lowercase() == wanted));
            if user_has_it {
                let long = format!("A user with the email address {email} already exists");
                return Err(Rejection::taken("email_address", long));
            }
        }
        let mut rng = fastrand::Rng::new();
        let id = clerk_id(&mut rng, "inv_");
        let ticket = clerk_id(&mut rng, "");
        let base = redirect_url.unwrap_or_else(|| "https://accounts.example.com/sign-up".into());
        let separator = if base.contains('?') { '&' } else { '?' };
        let now = now_ms();
        let invitation = json!({
            "object": "invitation",
            "id": id,
            "email_address": email,
            "public_metadata": public_metadata,
            "revoked": false,
            "status": "pending",
            "url": format!("{base}{separator}__clerk_ticket={ticket}"),
            "expires_at": now + days * DAY_MS,
            "created_at": now,
            "updated_at": now,
        });
        self.all.push(invitation.clone());
        Ok(invitation)
    }
}

/// `local@domain.tld`, loosely: what Clerk would at least require.
fn looks_like_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Now in Unix ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses_are_checked_loosely() {
        for good in ["a@example.com", "first.last+tag@sub.example.org"] {
            assert!(looks_like_email(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "@example.com",
            "a@example",
            "a@.com",
            "a b@example.com",
        ] {
            assert!(!looks_like_email(bad), "{bad}");
        }
    }
}
