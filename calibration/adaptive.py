"""Adaptive placement of detection trials: QUEST+ and a transformed up-down staircase.

Both decide only *which current to test next* and *when to stop*; the threshold and its
interval always come from the same maximum-likelihood fit (psychometric.py), so the two
procedures are compared on equal terms in the benchmark.

- QUEST+ (Watson 2017, via the maintained `questplus` package) picks the current that
  minimises the expected posterior entropy over (threshold, sd); it stops when the 95 %
  credible interval of the threshold is narrower than `ci_target_ua` (the confidence
  criterion) or when the trial budget is spent.
- The staircase (Levitt 1971 transformed up-down, default 2-down-1-up → 70.7 % point)
  halves its step at every reversal and stops after `n_reversals` reversals or the budget.
  It needs no model and is the fallback if QUEST+ cannot run.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AdaptiveProcedure(Protocol):
    """What a threshold session asks of a procedure."""

    @property
    def finished(self) -> bool: ...

    @property
    def stop_reason(self) -> str: ...

    def next_current(self) -> float: ...

    def update(self, current_ua: float, response: int) -> None: ...


class QuestPlusProcedure:
    """QUEST+ over a normal-CDF detection model in linear µA.

    The guess and lapse rates inside QUEST+ are fixed at 2 % (they only steer the trial
    placement; the final fit profiles them out).
    """

    def __init__(
        self,
        max_current_ua: float,
        budget: int = 60,
        min_trials: int = 12,
        ci_target_ua: float = 12.0,
        step_ua: float = 2.0,
    ) -> None:
        import questplus

        if max_current_ua <= step_ua:
            raise ValueError(f"QUEST+: max current {max_current_ua} µA leaves nothing to test")
        self.max_current_ua = max_current_ua
        self.budget = budget
        self.min_trials = min_trials
        self.ci_target_ua = ci_target_ua
        self._stims = np.arange(step_ua, max_current_ua + 1e-9, step_ua)
        self._means = np.arange(step_ua, 1.4 * max_current_ua, step_ua)
        self._qp = questplus.QuestPlus(
            stim_domain={"intensity": self._stims},
            param_domain={
                "mean": self._means,
                "sd": np.geomspace(0.02 * max_current_ua, 0.4 * max_current_ua, 8),
                "lower_asymptote": [0.02],
                "lapse_rate": [0.02],
            },
            outcome_domain={"response": ["yes", "no"]},
            func="norm_cdf",
            stim_scale="linear",
        )
        self.n_trials = 0
        self._reason = ""

    def credible_interval_ua(self, mass: float = 0.95) -> tuple[float, float]:
        """Central credible interval of the threshold from the marginal posterior."""
        post = np.asarray(self._qp.marginal_posterior["mean"], dtype=np.float64)
        cdf = np.cumsum(post) / post.sum()
        lo = float(np.interp((1 - mass) / 2, cdf, self._means))
        hi = float(np.interp(1 - (1 - mass) / 2, cdf, self._means))
        return lo, hi

    @property
    def finished(self) -> bool:
        if self.n_trials >= self.budget:
            self._reason = f"trial budget ({self.budget}) spent"
            return True
        if self.n_trials >= self.min_trials:
            lo, hi = self.credible_interval_ua()
            if hi - lo <= self.ci_target_ua:
                self._reason = f"95% credible interval {hi - lo:.1f} µA ≤ {self.ci_target_ua} µA"
                return True
        return False

    @property
    def stop_reason(self) -> str:
        return self._reason

    def next_current(self) -> float:
        return float(self._qp.next_stim["intensity"])

    def update(self, current_ua: float, response: int) -> None:
        nearest = float(self._stims[int(np.argmin(np.abs(self._stims - current_ua)))])
        self._qp.update(
            stim={"intensity": nearest}, outcome={"response": "yes" if response else "no"}
        )
        self.n_trials += 1


class StaircaseProcedure:
    """Transformed up-down staircase (n_down consecutive yes → down, n_up no → up)."""

    def __init__(
        self,
        max_current_ua: float,
        budget: int = 60,
        start_ua: float | None = None,
        step_ua: float = 16.0,
        min_step_ua: float = 2.0,
        n_down: int = 2,
        n_up: int = 1,
        n_reversals: int = 10,
    ) -> None:
        if max_current_ua <= min_step_ua:
            raise ValueError(f"staircase: max current {max_current_ua} µA leaves nothing to test")
        self.max_current_ua = max_current_ua
        self.min_step_ua = min_step_ua
        self.budget = budget
        self.n_down, self.n_up, self.n_reversals = n_down, n_up, n_reversals
        self.current = start_ua if start_ua is not None else 0.5 * max_current_ua
        self.step = step_ua
        self.n_trials = 0
        self.reversals: list[float] = []
        self._run = 0  # >0: consecutive yes, <0: consecutive no
        self._direction = 0  # last move: -1 down, +1 up
        self._reason = ""

    @property
    def finished(self) -> bool:
        if self.n_trials >= self.budget:
            self._reason = f"trial budget ({self.budget}) spent"
            return True
        if len(self.reversals) >= self.n_reversals:
            self._reason = f"{self.n_reversals} reversals"
            return True
        return False

    @property
    def stop_reason(self) -> str:
        return self._reason

    def next_current(self) -> float:
        return float(self.current)

    def update(self, current_ua: float, response: int) -> None:
        self.n_trials += 1
        self._run = max(self._run, 0) + 1 if response else min(self._run, 0) - 1
        move = 0
        if self._run >= self.n_down:
            move, self._run = -1, 0
        elif -self._run >= self.n_up:
            move, self._run = +1, 0
        if move == 0:
            return
        if self._direction != 0 and move != self._direction:
            self.reversals.append(current_ua)
            self.step = max(self.step / 2.0, self.min_step_ua)
        self._direction = move
        self.current = float(
            np.clip(current_ua + move * self.step, self.min_step_ua, self.max_current_ua)
        )


def make_procedure(
    method: str, max_current_ua: float, budget: int, ci_target_ua: float = 12.0
) -> AdaptiveProcedure:
    """`quest` (QUEST+) or `staircase`; anything else is refused by name."""
    if method == "quest":
        return QuestPlusProcedure(max_current_ua, budget=budget, ci_target_ua=ci_target_ua)
    if method == "staircase":
        return StaircaseProcedure(max_current_ua, budget=budget)
    raise ValueError(f"unknown threshold method {method!r}; use 'quest' or 'staircase'")
