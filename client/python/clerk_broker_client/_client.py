"""The Client: one channel to a broker, the caller's token on every call, a
default deadline on unary calls, waiting permits and resumable exports."""

from __future__ import annotations

import random
import time
from typing import Iterator, Optional, Sequence

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from clerk_broker.v1 import quota_pb2, quota_pb2_grpc, users_pb2, users_pb2_grpc

#: Where a broker listens by default (the demo's address).
DEFAULT_TARGET = "127.0.0.1:50051"
#: Deadline of a unary call, in seconds, unless the client sets another.
DEFAULT_TIMEOUT = 10.0
#: Trailer in which a draining broker repeats the last token it sent.
RESUME_TOKEN_TRAILER = "x-resume-token"


class PermitRefused(Exception):
    """:meth:`Client.acquire_permit` got no permit within its wait."""

    def __init__(self, budget: str, retry_after: float):
        super().__init__(f"permit refused on budget {budget!r}: retry after {retry_after:.3f}s")
        #: The budget asked for.
        self.budget = budget
        #: The broker's estimate, in seconds, of when a permit could be granted.
        self.retry_after = retry_after


def retry_after(error: grpc.RpcError) -> Optional[float]:
    """Seconds to wait before retrying, from the ``google.rpc.RetryInfo`` that
    the broker attaches to RESOURCE_EXHAUSTED (in the
    ``grpc-status-details-bin`` trailer); None if there is none."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None


def _channel(target: str) -> grpc.Channel:
    """A channel for ``host:port`` or an ``http://`` / ``https://`` URL."""
    if target.startswith("https://"):
        return grpc.secure_channel(target.removeprefix("https://"), grpc.ssl_channel_credentials())
    return grpc.insecure_channel(target.removeprefix("http://"))


class Client:
    """A connection to a broker. Use as a context manager, or call close().

    ``token`` is the caller's bearer token (brokers with a policy file need
    one; the demo does not). ``timeout`` is the deadline of every unary call
    in seconds. Exports have no deadline: they resume after a broken
    connection or UNAVAILABLE, up to ``resume_retries`` failures in a row.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        resume_retries: int = 6,
        channel: Optional[grpc.Channel] = None,
    ):
        if token is not None and (not token or not token.isascii() or not token.isprintable() or " " in token):
            # The token itself is never part of the message.
            raise ValueError("the caller token must be non-empty visible ASCII")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.resume_retries = resume_retries
        self.channel = channel or _channel(target)
        #: The generated stubs, for anything the helpers do not cover.
        self.users = users_pb2_grpc.UserServiceStub(self.channel)
        self.quota = quota_pb2_grpc.QuotaServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __repr__(self) -> str:
        token = "<redacted>" if self._metadata else None
        return f"Client(token={token}, timeout={self.timeout})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    # Lookups -------------------------------------------------------------

    def get_user(self, user_id: str) -> users_pb2.User:
        """One user; raises grpc.RpcError NOT_FOUND if Clerk has no such user."""
        return self.users.GetUser(
            users_pb2.GetUserRequest(user_id=user_id), timeout=self.timeout, metadata=self._metadata
        )

    def batch_get_users(self, user_ids: Sequence[str]) -> users_pb2.BatchGetUsersResponse:
        """Many users at once; unknown ids come back in ``missing_user_ids``."""
        return self.users.BatchGetUsers(
            users_pb2.BatchGetUsersRequest(user_ids=list(user_ids)),
            timeout=self.timeout,
            metadata=self._metadata,
        )

    def count_users(self, filter: Optional[users_pb2.UserFilter] = None) -> int:
        """How many users match ``filter`` (None counts all)."""
        request = users_pb2.CountUsersRequest(filter=filter)
        reply = self.users.CountUsers(request, timeout=self.timeout, metadata=self._metadata)
        return reply.total_count

    # Exports -------------------------------------------------------------

    def export(self, request: users_pb2.ListUsersRequest) -> Iterator[users_pb2.ListUsersResponse]:
        """The messages of ``ListUsers``, each with its ``resume_token``.

        When the stream breaks with UNAVAILABLE (a lost connection, a
        draining broker, Clerk down), the export is called again with the
        last token received, after a backoff, so every user arrives once.
        """
        token = request.resume_token or None
        delivered = 0
        failures = 0
        while True:
            if request.max_users and delivered >= request.max_users:
                return
            if token is None:
                call_request = request
            else:
                remaining = request.max_users - delivered if request.max_users else 0
                call_request = users_pb2.ListUsersRequest(
                    resume_token=token, page_size=request.page_size, max_users=remaining
                )
            try:
                for message in self.users.ListUsers(call_request, metadata=self._metadata):
                    failures = 0
                    delivered += len(message.users)
                    token = message.resume_token
                    yield message
                return
            except grpc.RpcError as error:
                trailer = dict(error.trailing_metadata() or ()).get(RESUME_TOKEN_TRAILER)
                if trailer:
                    token = trailer
                if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= self.resume_retries:
                    raise
                failures += 1
                backoff = min(5.0, 0.1 * 2 ** (failures - 1))
                time.sleep(backoff / 2 + random.random() * backoff / 2)

    def list_users(
        self,
        filter: Optional[users_pb2.UserFilter] = None,
        *,
        order_by: str = "",
        page_size: int = 500,
        max_users: int = 0,
        resume_token: str = "",
    ) -> Iterator[users_pb2.User]:
        """Every user matching ``filter``, one at a time (see :meth:`export`)."""
        request = users_pb2.ListUsersRequest(
            filter=filter,
            order_by=order_by,
            page_size=page_size,
            max_users=max_users,
            resume_token=resume_token,
        )
        for message in self.export(request):
            yield from message.users

    # Permits -------------------------------------------------------------

    def try_acquire_permit(self, request: quota_pb2.AcquirePermitRequest) -> quota_pb2.AcquirePermitResponse:
        """One AcquirePermit call: a refusal is ``granted=False`` with
        ``retry_after``, not an error."""
        max_wait = request.max_wait.ToTimedelta().total_seconds() if request.HasField("max_wait") else 0.0
        return self.quota.AcquirePermit(request, timeout=max_wait + self.timeout, metadata=self._metadata)

    def acquire_permit(
        self, cost: int = 1, *, budget: str = "", wait: float = 0.0, bulk: bool = False
    ) -> quota_pb2.AcquirePermitResponse:
        """A permit for ``cost`` requests of ``budget`` ("" is the upstream
        Clerk budget), waiting up to ``wait`` seconds: in the broker's fair
        queue first, then, if refused, ``retry_after`` at a time while the
        wait allows. Raises :class:`PermitRefused` when it does not."""
        deadline = time.monotonic() + wait
        priority = quota_pb2.PRIORITY_BULK if bulk else quota_pb2.PRIORITY_INTERACTIVE
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            request = quota_pb2.AcquirePermitRequest(budget=budget, cost=cost, priority=priority)
            if remaining > 0:
                request.max_wait.FromNanoseconds(int(remaining * 1e9))
            answer = self.try_acquire_permit(request)
            if answer.granted:
                return answer
            delay = answer.retry_after.ToTimedelta().total_seconds()
            pause = max(delay, 0.01)
            if time.monotonic() + pause > deadline:
                raise PermitRefused(answer.budget or budget, delay)
            time.sleep(pause)

    # Health --------------------------------------------------------------

    def health(self, service: str = "") -> int:
        """The standard health status of ``service`` ("" is the broker as a
        whole, "liveness" the process): a HealthCheckResponse.ServingStatus."""
        request = health_pb2.HealthCheckRequest(service=service)
        return self.health_stub.Check(request, timeout=self.timeout).status
