"""Settings and fixtures of the Python SDK suite (see test_sdk.py).

Environment, as for the Node suite:
  CLERK_API_URL     base URL without /v1 (required); the SDK gets server_url=CLERK_API_URL/v1
  CLERK_SECRET_KEY  the key the SDK sends (default sk_test_fake)
  SDK_EXPECT_URL    where to read the expected values with plain HTTP (default CLERK_API_URL)
  SDK_EXPECT_KEY    the key for SDK_EXPECT_URL (default CLERK_SECRET_KEY)
  SDK_USER_IDS      comma-separated user ids, at least 3 (default: the 3 oldest users)
  SDK_PYTHON_WRITE_USER  the user whose metadata is written (default: the second of
                    SDK_USER_IDS, so the Node suite's writes count against another user)
  SDK_ORG_ID        an organization id with members (default: the first one the oldest
                    users belong to)
"""

import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest
from clerk_backend_api import Clerk


@dataclass
class Settings:
    """Where the SDK goes, where expectations come from, and the fixture ids."""

    api_url: str
    secret_key: str
    expect_url: str
    expect_key: str
    user_ids: list
    write_user: str
    org_id: str
    nonce: str

    def expected(self, path):
        """GET `path` (under /v1) from the expectation source, as JSON."""
        request = urllib.request.Request(
            f"{self.expect_url}/v1{path}",
            headers={"Authorization": f"Bearer {self.expect_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(
                f"GET {path} from {self.expect_url}: {error.code} {error.read()!r}"
            ) from error


@pytest.fixture(scope="session")
def settings():
    api_url = os.environ.get("CLERK_API_URL")
    if not api_url:
        pytest.fail("CLERK_API_URL is required: the base URL without /v1")
    secret_key = os.environ.get("CLERK_SECRET_KEY") or "sk_test_fake"
    partial = Settings(
        api_url=api_url,
        secret_key=secret_key,
        expect_url=os.environ.get("SDK_EXPECT_URL") or api_url,
        expect_key=os.environ.get("SDK_EXPECT_KEY") or secret_key,
        user_ids=[i for i in os.environ.get("SDK_USER_IDS", "").split(",") if i],
        write_user="",
        org_id=os.environ.get("SDK_ORG_ID", ""),
        nonce=secrets.token_hex(6),
    )
    if not partial.user_ids or not partial.org_id:
        oldest = partial.expected("/users?limit=100&order_by=%2Bcreated_at")
        partial.user_ids = partial.user_ids or [user["id"] for user in oldest[:3]]
        if not partial.org_id:
            orgs = [
                org
                for user in oldest
                for org in (user.get("public_metadata") or {}).get("organization_ids", [])
            ]
            assert orgs, "no organization found among the oldest users: set SDK_ORG_ID"
            partial.org_id = orgs[0]
    assert len(partial.user_ids) >= 3, f"at least 3 user ids are needed: {partial.user_ids}"
    partial.write_user = os.environ.get("SDK_PYTHON_WRITE_USER") or partial.user_ids[1]
    return partial


@pytest.fixture(scope="session")
def clerk(settings):
    with Clerk(bearer_auth=settings.secret_key, server_url=f"{settings.api_url}/v1") as sdk:
        yield sdk
