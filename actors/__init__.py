"""The watchers: one module per actor. Each observes one thing and reports findings."""

from .base import Actor, AlertRaised, Finding, Report

__all__ = ["Actor", "AlertRaised", "Finding", "Report"]
