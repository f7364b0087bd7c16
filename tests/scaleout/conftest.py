"""Ray reads its settings when it is first imported: set them before any test here does.

Every Ray process of the test cluster stays on loopback (Ray otherwise swaps
127.0.0.1 for the node's routable address), sends no usage statistics, and
authenticates with a token held in the environment rather than one written to
``~/.ray``. Nothing outside ``tests/scaleout`` imports Ray.
"""

from __future__ import annotations

import os
import secrets

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
}
os.environ.update(RAY_ENV)
