//! The user write endpoints: `PATCH /v1/users/{user_id}` (simple fields; metadata replaced, as
//! API version 2025-11-10 allows), `PATCH /v1/users/{user_id}/metadata` (deep merge) and
//! `PUT /v1/users/{user_id}/metadata` (replace). Each answers the updated user and bumps its
//! `updated_at`; a rejected body changes nothing.

use serde_json::Value;

use super::body::{
    Body, Rejection, apply_patches, metadata_patches, metadata_replacements, set_field, touch,
};
use super::store::{Store, UserJson};

/// The metadata fields of a user.
const METADATA: [&str; 3] = ["public_metadata", "private_metadata", "unsafe_metadata"];

/// String-or-null fields `PATCH /v1/users/{user_id}` applies as given.
const NULLABLE_STRINGS: [&str; 3] = ["first_name", "last_name", "locale"];

/// Every parameter `PATCH /v1/users/{user_id}` accepts (2025-11-10). Those the fake does not
/// model (passwords, TOTP, primary identifiers…) are accepted and ignored; any other key is
/// a 422 `form_param_unknown`, as Clerk answers.
const UPDATE_USER_PARAMS: &[&str] = &[
    "external_id",
    "first_name",
    "last_name",
    "username",
    "locale",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "delete_self_enabled",
    "create_organization_enabled",
    "create_organizations_limit",
    "primary_email_address_id",
    "notify_primary_email_address_changed",
    "primary_phone_number_id",
    "primary_web3_wallet_id",
    "profile_image_id",
    "password",
    "password_digest",
    "password_hasher",
    "skip_password_checks",
    "sign_out_of_other_sessions",
    "totp_secret",
    "backup_codes",
    "legal_accepted_at",
    "skip_legal_checks",
    "created_at",
    "bypass_client_trust",
];

/// `PATCH /v1/users/{user_id}`.
pub(super) fn update_user(store: &mut Store, id: &str, bytes: &[u8]) -> Result<Vec<u8>, Rejection> {
    let body = Body::parse(bytes, UPDATE_USER_PARAMS)?;
    // Every parameter is checked before the user is touched: a 422 changes nothing.
    let mut changes: Vec<(&str, Value)> = Vec::new();
    for name in NULLABLE_STRINGS {
        if let Some(value) = body.nullable_string(name)? {
            changes.push((name, value.map_or(Value::Null, Value::String)));
        }
    }
    let username = body.nullable_string("username")?;
    let external_id = body.nullable_string("external_id")?;
    for name in ["delete_self_enabled", "create_organization_enabled"] {
        if let Some(flag) = body.bool(name)? {
            changes.push((name, Value::Bool(flag)));
        }
    }
    if let Some(limit) = body.nullable_int("create_organizations_limit")? {
        changes.push((
            "create_organizations_limit",
            limit.map_or(Value::Null, Value::from),
        ));
    }
    for name in METADATA {
        if let Some(metadata) = body.object(name)? {
            changes.push((name, Value::Object(metadata.clone())));
        }
    }
    let updated = store.update(id, |store, user| {
        // Usernames and external ids identify one user each.
        for (name, value) in [("username", &username), ("external_id", &external_id)] {
            let Some(value) = value else { continue };
            if let Some(wanted) = value
                && let Some(owner) = owner_of(store, name, wanted)
                && owner != id
            {
                let long = format!("That {name} is taken by another user. Please try another.");
                return Err(Rejection::taken(name, long));
            }
            set_field(user, name, value.clone().map_or(Value::Null, Value::String));
        }
        for (name, value) in changes {
            set_field(user, name, value);
        }
        touch(user);
        Ok(())
    });
    answer(updated, id)
}

/// `PATCH /v1/users/{user_id}/metadata`: each metadata object given is deep-merged into the
/// stored one (a null value removes its key at any depth); fields absent or null are kept.
pub(super) fn merge_user_metadata(
    store: &mut Store,
    id: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, Rejection> {
    let body = Body::parse(bytes, &METADATA)?;
    let patches = metadata_patches(&body, &METADATA)?;
    let updated = store.update(id, |_, user| {
        apply_patches(user, &patches);
        touch(user);
        Ok(())
    });
    answer(updated, id)
}

/// `PUT /v1/users/{user_id}/metadata`: each metadata field given replaces the stored one in
/// full (`{}` clears it, null stores null); fields absent are kept.
pub(super) fn replace_user_metadata(
    store: &mut Store,
    id: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, Rejection> {
    let body = Body::parse(bytes, &METADATA)?;
    let replacements = metadata_replacements(&body, &METADATA)?;
    let updated = store.update(id, |_, user| {
        for (name, value) in replacements {
            set_field(user, name, value);
        }
        touch(user);
        Ok(())
    });
    answer(updated, id)
}

/// The 404 Clerk answers for an unknown user id.
pub(super) fn user_not_found(id: &str) -> Rejection {
    Rejection::not_found(format!("No user was found with id {id}"))
}

/// The id of the user whose `field` (`username` or `external_id`) is `value`.
fn owner_of<'a>(store: &'a Store, field: &str, value: &str) -> Option<&'a str> {
    store
        .records()
        .find(|record| {
            let held = match field {
                "username" => record.username.as_deref(),
                _ => record.external_id.as_deref(),
            };
            held == Some(value)
        })
        .map(|record| record.id.as_str())
}

/// The updated user, or the error, or Clerk's 404.
fn answer(updated: Option<Result<&UserJson, Rejection>>, id: &str) -> Result<Vec<u8>, Rejection> {
    match updated {
        // Serialized in Clerk's field order, like the reads.
        Some(result) => result.map(|user| serde_json::to_vec(user).unwrap_or_default()),
        None => Err(user_not_found(id)),
    }
}
