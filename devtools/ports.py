"""Loopback ports for servers the tests start.

A port picked by binding to port 0 comes from the kernel's ephemeral range, which is also where every
outgoing connection takes its local port: between picking it and a server binding it (minutes later for
a stack's second executor), a client socket can hold it and the server then fails to start. So ports are
drawn at random from below the ephemeral range, and checked free by binding them."""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] | None = None, span: int = 1) -> int:
    """A loopback port (and the `span - 1` after it) outside the ephemeral range that nothing holds
    now and that `taken` does not list; the ports handed out are added to `taken`."""
    taken = set() if taken is None else taken
    high = max(_ephemeral_low(), LOWEST + 1000) - span
    for _ in range(1000):
        port = random.randrange(LOWEST, high)
        ports = set(range(port, port + span))
        if ports & taken or not all(_bindable(p) for p in ports):
            continue
        taken |= ports
        return port
    raise RuntimeError(f"no free loopback port in {LOWEST}–{high}")
