"""Constants and small helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

WRITE_KEY = "LEAKCANARYqbseg7Hn2Kx9Pw4Rt6Vz"  # recognisable, so leak scans can look for it
WORKSPACE = "ws-test"
