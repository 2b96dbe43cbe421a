"""A free loopback port, for the servers agentrag starts itself (the bundled LLM) and those its
tests and benchmarks start."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now. Another process may take it before the server binds it:
    a caller that cannot afford that retries with a new port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
