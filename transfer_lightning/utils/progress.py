"""Progress of every long wait: a live rich bar on a terminal, plain timed lines everywhere else.

One helper for the feature pass, decoding and scanning images, the LR finder, evaluate, predict
and the test pass. On a terminal with the progress bar on, ``PhaseProgress`` draws a bar in the
style of the training bar (done/total, rate, time left). In a log file, under SLURM or with
``trainer.enable_progress_bar=false`` it writes no control characters: one plain log line at the
start, at most one every ``TRANSFER_LIGHTNING_PROGRESS_INTERVAL_S`` seconds (30) with the count, the
rate and the time left, and one at the end (logged below a finished bar too). A phase whose rate, measured
from its first item on, says it will take more than a minute gets one line up front: what it is, about how
long, and what makes it faster.
"""

from __future__ import annotations

import logging
import os
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

log = logging.getLogger(__name__)

INTERVAL_VARIABLE = "TRANSFER_LIGHTNING_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0
LONG_PHASE_S = 60.0  # a phase expected to take longer gets the "about how long" line
_PROBE_S = 1.0  # measure the rate this long after the first item before estimating the whole phase
_settings = {"bar": True}


def configure_progress(bar: bool | None) -> None:
    """Whether a live bar may be drawn (``trainer.enable_progress_bar``; ``None`` means yes)."""
    _settings["bar"] = bar is not False


def live_bar_allowed() -> bool:
    """A live bar is drawn only on a terminal, with the bar on, in the first process."""
    return _settings["bar"] and Console().is_terminal and _process_rank() == 0


def plain_interval_s() -> float:
    """Seconds between plain progress lines (``TRANSFER_LIGHTNING_PROGRESS_INTERVAL_S``, default 30)."""
    return float(os.environ.get(INTERVAL_VARIABLE, DEFAULT_INTERVAL_S))


def format_duration(seconds: float) -> str:
    """``45 s``, ``14 min 50 s``, ``2 h 5 min``: rounded to what a reader plans with."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 10:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    if minutes < 60:
        return f"{minutes + (seconds >= 30)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"? {self.unit}/s", style="progress.data.speed")


class PhaseProgress:
    """Count, rate and time left of one long phase, as a live bar or as plain lines.

    Example::

        with PhaseProgress("Feature pass (train)", total=len(dataset), faster="...") as progress:
            for images, _ in loader:
                ...
                progress.advance(len(images))

    ``faster`` says what makes the phase faster (or unnecessary next time); it ends the one line
    announcing a phase that will take more than ``LONG_PHASE_S``. ``where`` names the device.
    ``outcome``, set before the phase ends, closes its end line (an epoch's losses and accuracies).
    ``already_done`` items were done before this process (a resumed epoch): counted, not timed.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        unit: str = "images",
        faster: str = "",
        where: str = "on this machine",
        interval_s: float | None = None,
        already_done: int = 0,
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.faster = faster
        self.where = where
        self.interval_s = plain_interval_s() if interval_s is None else interval_s
        self.done = self.already_done = already_done
        self.outcome = ""
        self.quiet = _process_rank() != 0  # under DDP every process runs the phase; one reports it
        self._bar: Progress | None = None
        self._task = None
        self._announced = False
        self._started = self._last_line = time.monotonic()
        self._first: tuple[float, int] | None = None  # time and count at the first item: rates are measured from it

    def __enter__(self) -> PhaseProgress:
        self._started = self._last_line = time.monotonic()
        self._first = None
        if self.quiet:
            return self
        if live_bar_allowed():
            self._bar = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(bar_width=24),
                MofNCompleteColumn(),
                _RateColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        else:
            log.info("%s: %s", self.description, self._count())
        return self

    def advance(self, amount: int = 1) -> None:
        """``amount`` more items done; may draw the bar, write a plain line or announce the phase."""
        self.done += amount
        if self.quiet:
            return
        now = time.monotonic()
        if self._first is None:
            self._first = (now, self.done)
        if not self._announced and self._measured_rate(now) is not None:
            self._announce(now)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif now - self._last_line >= self.interval_s and self.done != self.total:  # the end line follows
            self._last_line = now
            log.info("%s: %s", self.description, self._status(now))

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self._started
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            self._bar.stop()
        if kind is None:  # below a finished bar too: the log file keeps the record
            outcome = f"; {self.outcome}" if self.outcome else ""
            log.info(
                "%s: %s in %s (%s)%s",
                self.description,
                self._count(),
                format_duration(elapsed),
                self._rate(elapsed),
                outcome,
            )
        else:
            log.info("%s: stopped after %s", self.description, self._count())

    # -- text ------------------------------------------------------------------------------------
    def _count(self) -> str:
        if self.total is None:
            return f"{self.done:,} {self.unit}"
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        return f"{self.done:,}/{self.total:,} {self.unit}{percent}"

    def _rate(self, elapsed: float) -> str:
        timed = self.done - self.already_done
        return f"{timed / elapsed:,.1f} {self.unit}/s" if elapsed > 0 and timed else f"? {self.unit}/s"

    def _measured_rate(self, now: float) -> float | None:
        """Items per second since the first item was done, once measured over ``_PROBE_S``; else None.

        Not from the start: the wait for the first item (a thread pool starting, a first batch warming
        up the device) says nothing of the rest, and extrapolated it made 20 s look like 17 h.
        """
        if self._first is None or now - self._first[0] < _PROBE_S or self.done <= self._first[1]:
            return None
        return (self.done - self._first[1]) / (now - self._first[0])

    def _time_left(self, now: float) -> float | None:
        elapsed = now - self._started
        timed = self.done - self.already_done
        if not self.total or not timed or elapsed <= 0:
            return None
        rate = self._measured_rate(now) or timed / elapsed  # a plain line 30 s in: the average is measured
        return (self.total - self.done) / rate

    def _status(self, now: float) -> str:
        left = self._time_left(now)
        eta = f"ETA {format_duration(left)}" if left is not None else "ETA unknown"
        return f"{self._count()}, {self._rate(now - self._started)}, {eta}"

    def _announce(self, now: float) -> None:
        self._announced = True
        elapsed, left = now - self._started, self._time_left(now)
        if not left or elapsed + left < LONG_PHASE_S:  # nothing left: too late to announce
            return
        line = f"{self.description}, {self.total:,} {self.unit}: about {format_duration(elapsed + left)} {self.where}"
        line += f"; {self.faster}" if self.faster else ""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            log.info("%s", line)


def _process_rank() -> int:
    """This process's rank under DDP / SLURM (0 alone). Imported here, not at the top: the command-line
    checks import this module and must not wait for Lightning (and torch) to load."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank
