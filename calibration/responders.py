"""Who answers a trial: the operator typing the patient's answer, or a simulated patient.

The terminal responder prints a clear prompt for each trial and reads one line; typos are
re-asked, never guessed. Typing `p` pauses the session (as Ctrl-C does): every answered
trial is already in the session file, and `--resume` continues from there.
"""

from __future__ import annotations

from typing import Protocol

from rich.console import Console

from calibration.patient import SimulatedPatient


class SessionPaused(Exception):
    """The operator asked to pause (or pressed Ctrl-C); the session can be resumed."""


class Responder(Protocol):
    def detect(self, electrode_id: str, current_ua: float, index: int) -> bool: ...

    def rate(self, electrode_id: str, current_ua: float, index: int) -> float: ...

    def locate(
        self, electrode_id: str, current_ua: float, index: int
    ) -> tuple[float, float] | None: ...


class SimulatedResponder:
    """Answers from a SimulatedPatient (`--simulated-patient SEED`)."""

    def __init__(self, patient: SimulatedPatient) -> None:
        self.patient = patient

    def detect(self, electrode_id: str, current_ua: float, index: int) -> bool:
        return self.patient.detects(electrode_id, current_ua, index)

    def rate(self, electrode_id: str, current_ua: float, index: int) -> float:
        return self.patient.rates_brightness(electrode_id, current_ua, index)

    def locate(
        self, electrode_id: str, current_ua: float, index: int
    ) -> tuple[float, float] | None:
        return self.patient.reports_location(electrode_id, current_ua, index)


class TerminalResponder:
    """Prompts the operator for the patient's answer after each stimulus."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    def _ask(self, prompt: str) -> str:
        self.console.print(prompt, end="", highlight=False)
        try:
            answer = input().strip().lower()
        except EOFError as exc:
            raise SessionPaused("input closed") from exc
        if answer in ("p", "pause"):
            raise SessionPaused("paused by the operator")
        return answer

    def detect(self, electrode_id: str, current_ua: float, index: int) -> bool:
        while True:
            a = self._ask(
                f"[bold]trial {index + 1}[/] electrode [cyan]{electrode_id}[/] at "
                f"{current_ua:.1f} µA — phosphene seen? [bold]\\[y/n][/] (p = pause): "
            )
            if a in ("y", "yes", "1"):
                return True
            if a in ("n", "no", "0"):
                return False
            self.console.print("[red]please answer y or n (or p to pause)[/]")

    def rate(self, electrode_id: str, current_ua: float, index: int) -> float:
        while True:
            a = self._ask(
                f"[bold]trial {index + 1}[/] electrode [cyan]{electrode_id}[/] at "
                f"{current_ua:.1f} µA — brightness? [bold]\\[0 = none … 1 = bright, up to 10][/] "
                "(p = pause): "
            )
            try:
                v = float(a)
            except ValueError:
                v = -1.0
            if 0.0 <= v <= 10.0:
                return v
            self.console.print("[red]please type a number between 0 and 10 (or p to pause)[/]")

    def locate(
        self, electrode_id: str, current_ua: float, index: int
    ) -> tuple[float, float] | None:
        while True:
            a = self._ask(
                f"[bold]trial {index + 1}[/] electrode [cyan]{electrode_id}[/] at "
                f"{current_ua:.1f} µA — where? [bold]x y[/] in degrees (right/up positive), "
                "n = not seen (p = pause): "
            )
            if a in ("n", "no", "none"):
                return None
            parts = a.replace(",", " ").split()
            try:
                x, y = (float(v) for v in parts)
            except ValueError:
                x = y = float("nan")
            if abs(x) <= 90.0 and abs(y) <= 90.0:
                return x, y
            self.console.print(
                "[red]please type two numbers within ±90, e.g. '-3.5 2', or n (p to pause)[/]"
            )
