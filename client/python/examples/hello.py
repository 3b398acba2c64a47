#!/usr/bin/env python3
"""Hello broker: one user, a count, the first users of an export, a permit.

    cargo run --release -- demo          # in another terminal
    python client/python/examples/hello.py [host:port]

With a policy file, set CLERK_BROKER_TOKEN to the caller's token.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import grpc  # noqa: E402

from clerk_broker_client import Client, retry_after, users_pb2  # noqa: E402

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CLERK_BROKER_URL", "127.0.0.1:50051")
with Client(target, token=os.environ.get("CLERK_BROKER_TOKEN"), timeout=5) as broker:
    try:
        user = broker.get_user("user_WjqhESHrprLoQRaGgNMIoIuAr9n")
        print("user:", user.id, user.primary_email_address)
    except grpc.RpcError as error:
        print("lookup failed:", error.code().name, error.details(), "retry after:", retry_after(error))
    print("users at example.org:", broker.count_users(users_pb2.UserFilter(email_address_query="example.org")))
    for user in broker.list_users(order_by="+created_at", max_users=3):
        print("exported:", user.id)
    permit = broker.acquire_permit(1, wait=2)
    print(f"permit granted on {permit.budget} ({permit.limit} per {permit.window.ToTimedelta()})")
