"""What the tests start and drive: stand-ins of the servers Siaga talks to (Alertmanager, moto,
SNS, payment and social providers, webhooks, PostgreSQL), Prefect and `siaga up` as a user runs
them, the browser, and the helpers more than one test module shares. No test lives here."""
