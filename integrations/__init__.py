"""Actions that runbook steps call, one module per provider, each declaring an ``ACTIONS`` tuple.

Installed as ``siaga.integrations`` from the top-level folder ``integrations/`` (pyproject's
package-dir): import it as ``siaga.integrations``. Its part and the directions it may import:
docs/parts.toml."""

from siaga.actions import ActionRegistry

from . import (
    apprise_notify,
    aws,
    basic,
    comms,
    facebook,
    fanout,
    instagram,
    outbox,
    pagerduty,
    payments,
    slack,
    smtp,
    statuspage,
    teams,
    voices,
    webhook,
    website,
    whatsapp,
    x,
)
from ._http import warm_tls

__all__ = ["default_registry", "warm_tls"]


def default_registry() -> ActionRegistry:
    """Every action Siaga ships."""
    return ActionRegistry.of([
        *basic.ACTIONS, *outbox.ACTIONS, *webhook.ACTIONS,
        *aws.ACTIONS,
        *payments.ACTIONS, *statuspage.ACTIONS,
        *slack.ACTIONS, *teams.ACTIONS, *pagerduty.ACTIONS, *smtp.ACTIONS, *apprise_notify.ACTIONS,
        *whatsapp.ACTIONS,
        *x.ACTIONS, *facebook.ACTIONS, *instagram.ACTIONS, *website.ACTIONS,
        *fanout.ACTIONS, *comms.ACTIONS, *voices.ACTIONS,
    ])
