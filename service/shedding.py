"""Load shedding: when the listen queue is past max_queue, evaluations get 429 at once.

gunicorn's sync workers take one request each; the others wait in the kernel's accept queue
of the listening socket, shared by every worker. A worker that takes a request sees how many
are still waiting there, and when that is more than `max_queue` it answers 429 `overloaded`
with Retry-After instead of computing: well under a millisecond, so the queue drains fast and
a client hears "retry" instead of timing out.

On Linux, TCP_INFO of a LISTEN socket reports the accept queue's length in `tcpi_unacked` and
its bound in `tcpi_sacked` (include/uapi/linux/tcp.h; tcp_get_info). Elsewhere, or with no
listener known (the Flask test client), there is no shedding.
"""

from __future__ import annotations

import socket
import struct

from .errors import ApiError

# struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked.
_UNACKED = struct.Struct("=II")  # at offset 24: (tcpi_unacked, tcpi_sacked)
_OFFSET, _LENGTH = 24, 32
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def queued(listeners) -> int | None:
    """Connections waiting to be accepted on these listening sockets; None if unknown."""
    if _TCP_INFO is None or not listeners:
        return None
    total = 0
    for sock in listeners:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _LENGTH)
        except OSError:  # not TCP (a unix socket), or closed while the worker stops
            return None
        if len(info) < _LENGTH:
            return None
        total += _UNACKED.unpack_from(info, _OFFSET)[0]
    return total


def check(listeners, max_queue: int) -> None:
    """Raise 429 overloaded when more than max_queue connections wait (0 turns it off)."""
    if not max_queue:
        return
    waiting = queued(listeners)
    if waiting is not None and waiting > max_queue:
        raise ApiError(429, "overloaded", f"every worker is busy and {waiting} requests are "
                       f"waiting (the bound is {max_queue}); retry after Retry-After seconds",
                       headers={"Retry-After": "1"})
