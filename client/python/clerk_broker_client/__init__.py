"""Python client for clerk-broker.

The generated stubs live in ``clerk_broker.v1`` (``users_pb2``, ``quota_pb2``
and their ``*_pb2_grpc`` services); :class:`Client` wraps them with the
caller's token, a default deadline on every unary call, permits that wait,
and exports that resume after a broken connection.

    from clerk_broker_client import Client

    with Client("127.0.0.1:50051") as broker:
        user = broker.get_user("user_WjqhESHrprLoQRaGgNMIoIuAr9n")
        print(user.id, user.primary_email_address)
"""

from clerk_broker.v1 import quota_pb2, users_pb2

from ._client import (
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    Client,
    PermitRefused,
    retry_after,
)

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "Client",
    "PermitRefused",
    "quota_pb2",
    "retry_after",
    "users_pb2",
]
