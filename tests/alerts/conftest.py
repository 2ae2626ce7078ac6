"""The module fixtures of the receiver tests' `siaga up` (`support.receiver_stack`): `hooks`,
`receiver` and `alertmanager`, for the alerts tests that take them (test_receiver,
test_prometheus_chain). A module that defines a fixture of the same name uses its own."""

from ..support.receiver_stack import alertmanager, hooks, receiver  # noqa: F401
