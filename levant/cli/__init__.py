"""The ``levant`` command line: one module per group of commands.

Each submodule registers its commands on ``app``; this file only assembles them.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="levant",
    help="Run your own model provider.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Registration happens on import; keep these imports below ``app``.
from levant.cli import serve as _serve  # noqa: E402,F401
from levant.cli.deploy import deploy_app  # noqa: E402
from levant.cli.grants import grants_app  # noqa: E402
from levant.cli.keys import audit_app, keys_app  # noqa: E402
from levant.cli.limits import limits_app  # noqa: E402
from levant.cli.residency import residency_app  # noqa: E402

app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(grants_app, name="grants")
app.add_typer(limits_app, name="limits")
app.add_typer(residency_app, name="residency")
app.add_typer(deploy_app, name="deploy")
from levant.cli import store as _store  # noqa: E402,F401
