"""Clerk's official Python SDK (clerk-backend-api) against a Clerk-compatible Backend API: the
fake Clerk directly, or the broker's front in front of it.

Each test calls the SDK (which must parse the answer into its models, strictly typed) and
compares the fields it got with what the fake holds, read with plain HTTP. Settings come from
the environment: see conftest.py. Each test prints one JSON line of what it got (pytest -s).
"""

import json

import pytest
from clerk_backend_api import Clerk, models

# The user fields compared between the SDK's model and the fake's JSON.
USER_FIELDS = [
    "id",
    "external_id",
    "username",
    "first_name",
    "last_name",
    "image_url",
    "has_image",
    "primary_email_address_id",
    "primary_phone_number_id",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "password_enabled",
    "two_factor_enabled",
    "banned",
    "locked",
    "created_at",
    "updated_at",
    "last_sign_in_at",
    "last_active_at",
]

# The organization fields compared.
ORG_FIELDS = [
    "id",
    "name",
    "slug",
    "image_url",
    "has_image",
    "max_allowed_memberships",
    "admin_delete_enabled",
    "public_metadata",
    "private_metadata",
    "created_by",
    "created_at",
    "updated_at",
]


def report(call, **got):
    """One JSON line saying what the SDK returned."""
    print(json.dumps({"call": call, **got}, default=str))


def user_view(user):
    """The compared fields of a User model, as the fake's JSON spells them."""
    view = {field: getattr(user, field) for field in USER_FIELDS}
    view["email_addresses"] = [
        (e.id, e.email_address, e.verification.status.value if e.verification else None)
        for e in user.email_addresses
    ]
    view["phone_numbers"] = [(p.id, p.phone_number) for p in user.phone_numbers]
    return view


def raw_user_view(raw):
    """The same fields of a User JSON object."""
    view = {field: raw.get(field) for field in USER_FIELDS}
    view["email_addresses"] = [
        (e["id"], e["email_address"], (e.get("verification") or {}).get("status"))
        for e in raw["email_addresses"]
    ]
    view["phone_numbers"] = [(p["id"], p["phone_number"]) for p in raw["phone_numbers"]]
    return view


def user_id_query(ids):
    return "&".join(f"user_id={i}" for i in ids)


def test_users_get(settings, clerk):
    user = clerk.users.get(user_id=settings.user_ids[0])
    assert user_view(user) == raw_user_view(settings.expected(f"/users/{user.id}"))
    report("users.get", id=user.id, emails=[e.email_address for e in user.email_addresses])


def test_users_list_by_ids(settings, clerk):
    users = clerk.users.list(request={"user_id": settings.user_ids})
    want = settings.expected(f"/users?{user_id_query(settings.user_ids)}")
    assert [user_view(u) for u in users] == [raw_user_view(u) for u in want]
    report("users.list(user_id)", ids=[u.id for u in users])


def test_users_list_page(settings, clerk):
    users = clerk.users.list(request={"limit": 2, "offset": 1, "order_by": "+created_at"})
    want = settings.expected("/users?limit=2&offset=1&order_by=%2Bcreated_at")
    assert [u.id for u in users] == [u["id"] for u in want]
    report("users.list(page)", ids=[u.id for u in users])


def test_users_count(settings, clerk):
    count = clerk.users.count(request={})
    assert count.total_count == settings.expected("/users/count")["total_count"]
    filtered = clerk.users.count(request={"user_id": settings.user_ids})
    want = settings.expected(f"/users/count?{user_id_query(settings.user_ids)}")
    assert filtered.total_count == want["total_count"]
    report("users.count", total_count=count.total_count, filtered=filtered.total_count)


def test_users_get_missing_is_clerks_404(clerk):
    with pytest.raises(models.ClerkErrors) as raised:
        clerk.users.get(user_id="user_sdkcheckmissing")
    error = raised.value
    assert error.status_code == 404
    assert error.data.errors[0].code == "resource_not_found"
    report("users.get(missing)", status=error.status_code, code=error.data.errors[0].code)


def test_users_update_metadata_merges_and_null_removes(settings, clerk):
    user_id = settings.write_user
    before = settings.expected(f"/users/{user_id}")
    merged = clerk.users.update_metadata(
        user_id=user_id,
        public_metadata={"sdk_python": {"run": settings.nonce, "nested": {"a": 1}}},
        private_metadata={"sdk_python_secret": settings.nonce},
    )
    assert merged.public_metadata == {
        **before["public_metadata"],
        "sdk_python": {"run": settings.nonce, "nested": {"a": 1}},
    }
    assert merged.private_metadata == {
        **(before.get("private_metadata") or {}),
        "sdk_python_secret": settings.nonce,
    }
    assert merged.updated_at > before["updated_at"]
    assert user_view(merged) == raw_user_view(settings.expected(f"/users/{user_id}"))
    restored = clerk.users.update_metadata(
        user_id=user_id,
        public_metadata={"sdk_python": None},
        private_metadata={"sdk_python_secret": None},
    )
    assert restored.public_metadata == before["public_metadata"]
    assert restored.private_metadata == (before.get("private_metadata") or {})
    report(
        "users.update_metadata",
        id=user_id,
        merged=merged.public_metadata["sdk_python"],
        restored=restored.public_metadata,
    )


def test_organizations_get_by_id_and_slug(settings, clerk):
    org = clerk.organizations.get(organization_id=settings.org_id)
    want = settings.expected(f"/organizations/{settings.org_id}")
    assert {f: getattr(org, f) for f in ORG_FIELDS} == {f: want.get(f) for f in ORG_FIELDS}
    by_slug = clerk.organizations.get(organization_id=org.slug, include_members_count=True)
    assert by_slug.id == org.id
    counted = settings.expected(f"/organizations/{org.id}?include_members_count=true")
    assert by_slug.members_count == counted["members_count"]
    report("organizations.get", id=org.id, slug=org.slug, members_count=by_slug.members_count)


def test_organization_memberships_list(settings, clerk):
    page = clerk.organization_memberships.list(organization_id=settings.org_id, limit=5)
    want = settings.expected(f"/organizations/{settings.org_id}/memberships?limit=5")
    assert page.total_count == want["total_count"]
    got = [(m.id, m.role, m.public_user_data.user_id, m.organization.id) for m in page.data]
    expected = [
        (m["id"], m["role"], m["public_user_data"]["user_id"], m["organization"]["id"])
        for m in want["data"]
    ]
    assert got == expected
    report("organization_memberships.list", total_count=page.total_count, members=got)


def test_invitations_create(settings, clerk):
    email = f"sdk-python-{settings.nonce}@example.com"
    invitation = clerk.invitations.create(
        request={"email_address": email, "public_metadata": {"source": "sdk-python"}}
    )
    assert invitation.email_address == email
    assert invitation.status == models.InvitationStatus.PENDING
    assert invitation.public_metadata == {"source": "sdk-python"}
    assert invitation.id.startswith("inv_")
    report("invitations.create", id=invitation.id, status=invitation.status.value)


def test_jwks(settings, clerk):
    jwks = clerk.jwks.get_jwks()
    want = settings.expected("/jwks")
    assert [(k.kid, k.kty, k.alg, k.use, k.n, k.e) for k in jwks.keys] == [
        (k["kid"], k["kty"], k["alg"], k["use"], k["n"], k["e"]) for k in want["keys"]
    ]
    report("jwks.get_jwks", kids=[k.kid for k in jwks.keys])


def test_wrong_key_is_refused(settings):
    with Clerk(bearer_auth="sk_test_not_the_key", server_url=f"{settings.api_url}/v1") as stranger:
        with pytest.raises(models.ClerkErrors) as raised:
            stranger.users.get(user_id=settings.user_ids[0])
    assert raised.value.status_code == 401
    report("wrong key", status=raised.value.status_code)
