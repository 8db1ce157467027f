"""devhost: runs a Python v2 function app (``function_app.app``) the way the Functions host does.

Where Azure Functions Core Tools cannot be installed, ``python -m devstack.devhost`` serves the
app from its own binding metadata: HTTP routes under ``/api``, timer triggers on their NCRONTAB
schedules, queue triggers and queue outputs against Azurite, and the host's admin API.
"""

from __future__ import annotations

from .host import DEFAULT_FUNCTION_KEY, DEFAULT_PORT, DevHost, DevHostError

__all__ = ["DEFAULT_FUNCTION_KEY", "DEFAULT_PORT", "DevHost", "DevHostError"]
