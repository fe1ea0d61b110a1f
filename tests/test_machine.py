"""What the benchmarks print about the machine: its speed at the moment of a run."""

from __future__ import annotations

import math

from scripts import machine


def test_the_machine_reference_is_the_median_round_in_ms(monkeypatch) -> None:
    """A shared machine slows for a round now and then: the reference is the middle round's
    time, in milliseconds, not the quickest or the mean (rounds of 10, 50 and 30 ms read 30)."""
    clock = iter([0.0, 0.010, 1.0, 1.050, 2.0, 2.030])
    monkeypatch.setattr(machine.time, "perf_counter", lambda: next(clock))
    assert math.isclose(machine.reference_ms(rounds=3), 30.0)


def test_the_machine_reference_runs_its_workload() -> None:
    assert 0 < machine.reference_ms(rounds=1) < 60_000
