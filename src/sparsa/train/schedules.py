"""Schedules of sparse training: pure functions of the step number and explicit settings.

* :func:`cubic_sparsity` -- gradual magnitude pruning (Zhu & Gupta 2017): from ``s_init`` at ``start`` to
  ``s_final`` at ``end`` along s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3, which prunes fast while
  the network has redundancy and slowly near the target.
* :func:`cosine_fraction` -- the update fraction of dynamic sparse training (RigL, Evci et al. 2020):
  f(t) = alpha / 2 (1 + cos(pi (t - t0) / (t1 - t0))), decaying from ``alpha`` to 0 so the topology settles.
* :func:`mask_decay` -- the multiplier of pruned weights in the decaying-mask schedule for N:M (Bambhaniya et
  al. 2024, "Progressive Gradient Flow"): 1 (dense) at ``start``, decaying linearly or exponentially towards 0,
  exactly 0 from ``end`` on, so the last part of training runs with the hard N:M mask.
* :func:`is_update_step` -- mask updates happen every ``every`` steps inside [start, end].

Steps count optimizer steps from 1 (the first ``step()`` call after the first ``optimizer.step()``).
"""

from __future__ import annotations

import math

__all__ = ["ScheduleError", "check_window", "cubic_sparsity", "cosine_fraction", "mask_decay", "is_update_step",
           "DECAY_SHAPES"]

DECAY_SHAPES = ("linear", "exponential")


class ScheduleError(ValueError):
    """A schedule whose settings contradict each other (an end before its start, a negative step, ...)."""


def check_window(start: int, end: int, what: str = "schedule") -> None:
    """Raise ScheduleError unless 0 <= start < end."""
    if start < 0:
        raise ScheduleError(f"{what} start must be >= 0, got step {start}")
    if end <= start:
        raise ScheduleError(f"{what} ends at step {end}, which is not after its start at step {start}; "
                            f"the end must come after the start")


def _progress(step: int, start: int, end: int) -> float:
    """Fraction of [start, end] done at ``step``, clamped to [0, 1]."""
    return min(1.0, max(0.0, (step - start) / (end - start)))


def cubic_sparsity(step: int, start: int, end: int, s_init: float, s_final: float) -> float:
    """Sparsity of gradual magnitude pruning at ``step``: ``s_init`` up to ``start``, ``s_final`` from ``end``."""
    check_window(start, end, "pruning schedule")
    p = _progress(step, start, end)
    return s_final + (s_init - s_final) * (1.0 - p) ** 3


def cosine_fraction(step: int, start: int, end: int, alpha: float) -> float:
    """Fraction of a layer's active weights dropped (and regrown) at an update at ``step``; 0 after ``end``."""
    check_window(start, end, "update schedule")
    if step > end:
        return 0.0
    return alpha / 2.0 * (1.0 + math.cos(math.pi * _progress(step, start, end)))


def mask_decay(step: int, start: int, end: int, shape: str = "linear", rate: float = 5.0) -> float:
    """Multiplier of the pruned weights at ``step``: 1 up to ``start``, 0 from ``end``.

    ``linear``: 1 - p; ``exponential``: exp(-rate p), then set to 0 at the end (p = progress in [0, 1]).
    """
    check_window(start, end, "mask decay")
    if shape not in DECAY_SHAPES:
        raise ScheduleError(f"unknown decay shape '{shape}'; known shapes: {', '.join(DECAY_SHAPES)}")
    if step >= end:
        return 0.0
    p = _progress(step, start, end)
    return 1.0 - p if shape == "linear" else math.exp(-rate * p)


def is_update_step(step: int, start: int, end: int, every: int) -> bool:
    """True at start + k * every (k >= 1) while the step is not past ``end``, and at ``end`` itself, so that a
    schedule always reaches its final value even when ``every`` does not divide the window."""
    if every < 1:
        raise ScheduleError(f"update interval must be >= 1 step, got {every}")
    return start < step <= end and ((step - start) % every == 0 or step == end)
