"""Access: who may call (API keys → Principal), what they did (usage) and who changed what (audit).

Policy lives here and nowhere else. Public entry points are in the modules:
``keys``, ``principal``, ``tenancy``, ``audit``, ``usage``, ``rollups``, ``secret``,
``startup``.
"""
