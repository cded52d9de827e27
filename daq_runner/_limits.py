"""Bounds that every part of daq-runner shares, stated once."""

from __future__ import annotations

__all__ = ["MAX_SECONDS"]

MAX_SECONDS = 7 * 24 * 3600.0
"""The longest time anything may be given: a step's timeout, a wait, a request's timeout,
``--max-outage``, ``--wait-lock`` (a week, in seconds). A longer one is a slip (milliseconds
for seconds, a digit too many), and every deadline stays a finite, exact float."""
