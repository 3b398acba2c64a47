"""Every RPC through the wrapper and the generated stubs, against the demo
broker: values, NOT_FOUND, RESOURCE_EXHAUSTED with RetryInfo, exports with
resume tokens, permits, and the standard health service."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2

from clerk_broker.v1 import quota_pb2, users_pb2
from clerk_broker_client import Client, PermitRefused, retry_after

TOTAL = 10_000  # the demo's users


def test_get_user_returns_the_seeded_user(client, demo):
    user = client.get_user(demo.sample_ids[0])
    assert user.id == demo.sample_ids[0]
    assert demo.sample_ids[0] in user.raw_json
    assert user.created_at.seconds > 0


def test_unknown_user_is_not_found(client):
    with pytest.raises(grpc.RpcError) as caught:
        client.get_user("user_doesnotexist")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_id_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as caught:
        client.get_user("not an id!")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert retry_after(caught.value) is None


def test_batch_get_users_lists_missing_ids(client, demo):
    first, second = demo.sample_ids
    reply = client.batch_get_users([second, "user_doesnotexist", first])
    assert [u.id for u in reply.users] == [second, first]
    assert list(reply.missing_user_ids) == ["user_doesnotexist"]


def test_count_users_with_and_without_filter(client, demo):
    assert client.count_users() == TOTAL
    one = users_pb2.UserFilter(user_ids=[demo.sample_ids[0]])
    assert client.count_users(one) == 1


def test_export_streams_every_matching_user_once(client):
    query = users_pb2.UserFilter(name_query="frances")
    expected = client.count_users(query)
    assert 0 < expected < TOTAL
    ids = [user.id for user in client.list_users(query, order_by="+created_at", page_size=250)]
    assert len(ids) == expected
    assert len(set(ids)) == expected


def test_an_export_continues_from_a_resume_token(client):
    request = users_pb2.ListUsersRequest(order_by="+created_at", page_size=25, max_users=60)
    messages = list(client.users.ListUsers(request, timeout=30))
    assert [len(m.users) for m in messages] == [25, 25, 10]
    first = [u.id for m in messages for u in m.users]
    rest = [
        u.id
        for u in client.list_users(resume_token=messages[-1].resume_token, page_size=500, max_users=140)
    ]
    assert len(rest) == 140
    whole = [u.id for u in client.list_users(order_by="+created_at", max_users=200)]
    assert first + rest == whole


def test_a_forged_resume_token_is_invalid_argument(client):
    with pytest.raises(grpc.RpcError) as caught:
        list(client.list_users(resume_token="forged.token"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_acquire_permit_is_granted_on_the_upstream_budget(client):
    answer = client.acquire_permit(2, wait=5)
    assert answer.granted
    assert answer.budget == "clerk"
    assert answer.limit == 1000
    assert answer.window.ToTimedelta().total_seconds() == 1.0


def test_unknown_budget_is_not_found(client):
    with pytest.raises(grpc.RpcError) as caught:
        client.acquire_permit(budget="no-such-budget")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_resource_exhausted_carries_retry_info(demo):
    """A permit for the whole budget leaves no room: a lookup that cannot
    wait is refused at once with RESOURCE_EXHAUSTED and google.rpc.RetryInfo,
    and a permit that cannot wait is granted=False with retry_after."""
    with Client(demo.address, timeout=0.3) as client:
        everything = quota_pb2.AcquirePermitRequest(cost=1000)
        everything.max_wait.FromSeconds(5)
        assert client.try_acquire_permit(everything).granted
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            client.get_user(f"user_exhausted{uuid.uuid4().hex}")  # never cached
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        delay = retry_after(caught.value)
        assert delay is not None and 0.3 < delay <= 1.1, delay
        assert time.monotonic() - started < 0.3 + 0.5

        refused = client.try_acquire_permit(quota_pb2.AcquirePermitRequest(cost=1))
        assert not refused.granted
        assert refused.retry_after.ToTimedelta().total_seconds() > 0
        with pytest.raises(PermitRefused) as caught:
            client.acquire_permit(1, wait=0.05)
        assert caught.value.retry_after > 0
    # The budget frees within its window: a permit that may wait gets it.
    with Client(demo.address) as client:
        assert client.acquire_permit(1, wait=3).granted


def test_health_check_through_grpcio_health_checking(client):
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ["", "liveness", "clerk_broker.v1.UserService", "clerk_broker.v1.QuotaService"]:
        assert client.health(service) == serving, service
    with pytest.raises(grpc.RpcError) as caught:
        client.health("no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_token_is_sent_and_never_shown(demo):
    # The demo takes any caller; the token must still be well-formed and hidden.
    with Client(demo.address, token="py-secret-token") as client:
        assert "py-secret-token" not in repr(client)
        assert client.count_users() == TOTAL
    with pytest.raises(ValueError) as caught:
        Client(demo.address, token="bad token")
    assert "bad token" not in str(caught.value)
