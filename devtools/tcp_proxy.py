"""A small TCP proxy for fault tests: a server "stops" for its clients when the proxy stops (the
listener closes and every open connection is cut) and "comes back" when it starts again on the same
port. The shared local servers behind it are never touched."""

from __future__ import annotations

import socket
import threading

from devtools.ports import free_port


class TcpProxy:
    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1", port: int | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.stops = 0

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TcpProxy:
        if self._listener is not None:
            return self
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(128)
        ls.settimeout(0.1)
        self._listener = ls
        self._acceptor = threading.Thread(target=self._accept, args=(ls,), daemon=True, name=f"proxy-{self.port}")
        self._acceptor.start()
        return self

    def stop(self) -> None:
        ls, self._listener = self._listener, None
        if ls is None:
            return
        self.stops += 1
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)  # its accept() returns within 0.1 s; then the port is free again
        ls.close()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            _close(s)

    def _accept(self, ls: socket.socket) -> None:
        while self._listener is ls:
            try:
                client, _ = ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not ls:
                    _close(client)
                    _close(upstream)
                    return
                self._socks.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            _close(a)
            _close(b)
            with self._lock:
                self._socks.discard(a)
                self._socks.discard(b)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
