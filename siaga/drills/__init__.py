"""Drills: rehearse a runbook safely, score the team, show the trend.

`score` (pure) turns a drill's facts into figures and a score out of 100; `records` keeps them in
Siaga's store; `chart` draws the scores over time as SVG. The Prefect side is `siaga.flows.drilling`.
"""
