"""The chat app (``/``) and the console (``/console``): static files, no build step.

Plain ES modules and one stylesheet under ``static/``; they talk only to the
public ``/v1`` API and the ``/auth`` and ``/api`` routes. ``make run`` needs no Node.
"""

from levant.web.routes import STATIC_DIR, mount_web

__all__ = ["STATIC_DIR", "mount_web"]
