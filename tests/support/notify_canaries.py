"""The notification tests' canary secrets: values that must never show up in what is sent, logged
or recorded."""

from __future__ import annotations

CANARY = {
    "slack-token": "xoxb-canary-0000-slacktoken-7f3a9c",
    "slack-webhook": "canary-slack-webhook-8d2e41",
    "teams-webhook": "canary-teams-sig-c0ffee5b",
    "pd-key": "canarypdroutingkey0000000000abcd",  # 32 characters, as PagerDuty wants
    "smtp-password": "canary-smtp-pass-51f0e2",
    "apprise-url": "",  # set per test: the URL embeds canary-apprise-pass-9e81
}
APPRISE_PASS = "canary-apprise-pass-9e81"
