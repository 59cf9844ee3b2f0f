"""The error every part of tracking plans raises: a plan that cannot be read, compiled or run."""

from __future__ import annotations

from ...core import PluginError

__all__ = ["TrackingPlanError"]


class TrackingPlanError(PluginError):
    """A plan file cannot be read or compiled; the message names the file and the place in it."""
