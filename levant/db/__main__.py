"""``python -m levant.db upgrade [URL]`` | ``revision MESSAGE [URL]``: for developers.

Users never need this: ``levant`` upgrades the database itself at start-up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command

from levant.db.engine import resolve_url
from levant.db.migrate import alembic_config, upgrade

USAGE = "usage: python -m levant.db upgrade [URL] | revision MESSAGE [URL]"


def main(argv: list[str]) -> int:
    if argv[:1] == ["upgrade"] and len(argv) <= 2:
        upgrade(resolve_url(Path.cwd(), argv[1] if len(argv) > 1 else None))
        return 0
    if argv[:1] == ["revision"] and 2 <= len(argv) <= 3:
        url = resolve_url(Path.cwd(), argv[2] if len(argv) > 2 else None)
        command.revision(alembic_config(url), message=argv[1], autogenerate=True)
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
