"""Validate and compile the bundled runbook library, and a generated 1,000-step runbook.

Prints wall times (best of 5). Target: under 1 s each on 2 cores.
    python benchmarks/compile.py
"""

from __future__ import annotations

import time
from pathlib import Path

from siaga.flows import compile_runbook
from siaga.integrations import default_registry

from siaga.runbook import parse_runbook, runbook_files

REPO = Path(__file__).resolve().parent.parent


def generated_runbook(steps: int) -> str:
    lines = [
        "runbook: generated",
        "title: Generated runbook",
        "severity: sev2",
        "inputs:",
        "  region: {type: string, default: ap-southeast-1}",
        "roles:",
        "  ops: [eko, fajar]",
        "steps:",
    ]
    for i in range(steps):
        after = "[]" if i == 0 else f"[s{i - 1}]" if i == 1 else f"[s{i - 1}, s{i - 2}]"
        if i % 3 == 0:
            lines += [
                f"  - id: s{i}",
                "    action: outbox.send",
                f"    after: {after}",
                f"    with: {{to: team, message: \"step {i} in {{{{ inputs.region }}}}\"}}",
            ]
        elif i % 3 == 1:
            lines += [
                f"  - id: s{i}",
                "    action: http.request",
                f"    after: {after}",
                "    retries: 2",
                "    timeout: 30s",
                f"    with: {{url: \"https://switch.internal.example/{i}\", json: {{previous: \"{{{{ steps.s{i - 1}.output }}}}\"}}}}",
                "    approval: {from: [ops], quorum: 1}",
            ]
        else:
            lines += [f"  - id: s{i}", "    action: note", f"    after: {after}", f"    when: \"inputs.region != 'x{i}'\"", f"    with: {{text: \"note {i}\"}}"]
    return "\n".join(lines) + "\n"


def best_of(times: int, fn) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    registry = default_registry()
    library = [(str(p), p.read_text()) for p in runbook_files(REPO / "runbooks")]
    big = generated_runbook(1000)

    def validate_library() -> None:
        for name, text in library:
            parse_runbook(text, registry, file=name)

    def compile_library() -> None:
        for name, text in library:
            compile_runbook(parse_runbook(text, registry, file=name), registry)

    big_runbook = parse_runbook(big, registry, file="generated.yaml")
    print(f"bundled library: {len(library)} runbooks, {sum(t.count('- id:') for _, t in library)} steps")
    print(f"  validate: {best_of(5, validate_library) * 1000:8.1f} ms")
    print(f"  validate + compile: {best_of(5, compile_library) * 1000:8.1f} ms")
    print(f"generated runbook: {len(big_runbook.steps)} steps, {len(big.splitlines())} lines")
    print(f"  validate: {best_of(5, lambda: parse_runbook(big, registry, file='generated.yaml')) * 1000:8.1f} ms")
    print(f"  compile:  {best_of(5, lambda: compile_runbook(big_runbook, registry)) * 1000:8.1f} ms")
    print("target: under 1000 ms each")


if __name__ == "__main__":
    main()
