"""Put on PYTHONPATH of test subprocesses: any attempt to open a network connection fails loudly."""

import socket


class NetworkBlocked(RuntimeError):
    pass


def _blocked(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted in a test subprocess: {args[1:] or kwargs}")


socket.socket.connect = _blocked
socket.socket.connect_ex = _blocked
socket.create_connection = _blocked
socket.getaddrinfo = _blocked
