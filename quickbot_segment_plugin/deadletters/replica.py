"""Which replica (process) wrote a counter row: `QUICKBOT_SEGMENT_REPLICA_ID`, else host:pid.

With several replicas writing one shared store, `stats` shows each replica's counters next to
the sum, so an operator can see that one pod stopped delivering while the others did not.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Final

from ..core import ConfigurationError
from .config import DeadLetterSettings

REPLICA_ID_ENV: Final = "QUICKBOT_SEGMENT_REPLICA_ID"
MAX_REPLICA_ID_CHARS: Final = 200


def replica_id(environ: Mapping[str, str] | None = None) -> str:
    """The operator's name for this replica, else `hostname:pid` (read each time: a forked child differs)."""
    chosen = DeadLetterSettings.from_env(environ).replica_id
    if not chosen:
        return f"{socket.gethostname()}:{os.getpid()}"
    if len(chosen) > MAX_REPLICA_ID_CHARS or not chosen.isprintable():
        raise ConfigurationError(
            f"{REPLICA_ID_ENV} must be printable text of at most {MAX_REPLICA_ID_CHARS} characters "
            f"(a pod or host name), got {len(chosen)} character(s).",
            field=REPLICA_ID_ENV,
        )
    return chosen


def process_token() -> str:
    """`host:pid:random` naming this process and this hold, so a lease left by a process that
    died on this machine can be told apart from one still held."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(token: str) -> bool:
    """True only when the holder ran on this machine and its process is gone (a pid reused since
    makes it look alive: then the lease's expiry decides)."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
