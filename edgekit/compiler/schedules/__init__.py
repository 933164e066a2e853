"""Default (untuned) TVM schedules per target family."""
from __future__ import annotations

from edgekit.compiler.schedules.cpu import build_cpu, schedule_cpu

__all__ = ["build_cpu", "schedule_cpu"]
