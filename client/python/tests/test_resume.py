"""Client.list_users resumes transparently when the connection breaks
mid-export: through a TCP proxy that the test cuts."""

from __future__ import annotations

import socket
import threading

from clerk_broker_client import Client


class Proxy:
    """Forwards 127.0.0.1:<port> to the broker; cut() drops every connection."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                inbound, _ = self.listener.accept()
            except OSError:
                return
            outbound = socket.create_connection(self.target)
            with self.lock:
                self.connections += 1
                self.sockets += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self.pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            for end in self.sockets:
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_list_users_resumes_after_the_connection_is_cut(client, demo):
    expected = [u.id for u in client.list_users(order_by="+created_at", max_users=800)]
    proxy = Proxy(demo.address)
    try:
        with Client(proxy.address) as through_proxy:
            got = []
            users = through_proxy.list_users(order_by="+created_at", page_size=10, max_users=800)
            for user in users:
                got.append(user.id)
                if len(got) == 30:
                    proxy.cut()
        assert proxy.connections >= 2, "the export did not reconnect"
        assert got == expected
    finally:
        proxy.close()
