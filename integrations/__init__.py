"""Actions that runbook steps call, one module per provider, each declaring an ``ACTIONS`` tuple."""

from siaga.actions import ActionRegistry

from . import basic, outbox, payments, statuspage, webhook

__all__ = ["default_registry"]


def default_registry() -> ActionRegistry:
    """Every action Siaga ships."""
    return ActionRegistry.of(
        [*basic.ACTIONS, *outbox.ACTIONS, *payments.ACTIONS, *statuspage.ACTIONS, *webhook.ACTIONS]
    )
