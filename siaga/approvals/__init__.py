"""Approval gates: who may approve (policy), one-time codes, evidence, and their records."""
