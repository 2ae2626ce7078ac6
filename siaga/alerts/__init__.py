"""Alerts: one parser per source turns a webhook payload into `Alert`s; signatures prove where a
payload came from; routing groups alerts into incidents. The parsers and routing are pure."""

from .model import Alert, AlertStatus, BadPayload

__all__ = ["Alert", "AlertStatus", "BadPayload"]
