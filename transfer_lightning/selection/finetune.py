"""Select's second stage: the chosen candidates fine-tuned with several seeds, as ordinary runs.

Each chosen candidate is one multirun of the training command, ``seed=1,...,n``, in
``<select>/finetune/<candidate>/`` (``hydra.sweep.dir``), with its head starting from the probe
(``model.head_init``): so the jobs go through the Hydra launcher the select command chose
(``hydra/launcher=joblib`` runs the seeds in parallel, ``submitit_slurm`` submits them to SLURM), each
job is a normal run folder (TensorBoard, ``evaluate``, ``predict``, ``export``), and a resumed select
re-runs the same multirun: the sweep's own resume skips the jobs that completed and continues the one
that was killed from its ``last.ckpt`` (``sweeps/resume.py``). A candidate whose seeds all completed
is not launched again.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

from transfer_lightning.run.summary import read_summary
from transfer_lightning.selection.candidates import Candidate, SelectPlan, hydra_value
from transfer_lightning.sweeps.results import collect_jobs
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger("transfer_lightning")

FINETUNE = "finetune"
POLL_S = 1.0  # how often the progress line looks for finished runs


def finetune_dir(folder: Path, candidate: Candidate) -> Path:
    return Path(folder) / FINETUNE / candidate.name


def seed_values(count: int) -> list[int]:
    return list(range(1, count + 1))


def completed_seeds(sweep_dir: Path) -> set[int]:
    """The seeds whose job in ``sweep_dir`` completed (its ``run_summary.json`` says so)."""
    if not sweep_dir.is_dir():
        return set()
    done = set()
    for job in collect_jobs(sweep_dir):
        seed = job.values.get("seed")
        if job.status == "completed" and seed is not None and seed.isdigit():
            done.add(int(seed))
    return done


def finetune_command(
    plan: SelectPlan, candidate: Candidate, head: Path | None, seeds: list[int], sweep_dir: Path
) -> list[str]:
    """The multirun that fine-tunes ``candidate`` once per seed (every seed: job k is always seed k + 1), its head
    starting from ``head`` (None: a random head)."""
    return [
        sys.executable, "-m", "transfer_lightning", "--multirun",
        *plan.searchpath, *plan.forwarded, *plan.launcher, *candidate.overrides, *plan.finetune, *head_override(head),
        f"seed={','.join(str(seed) for seed in seeds)}",
        f"hydra.sweep.dir={hydra_value(sweep_dir.resolve())}",
    ]  # fmt: skip


def head_override(head: Path | None) -> list[str]:
    """``model.head_init=<the probe's head>``, or nothing for a candidate whose head starts random."""
    return [] if head is None else [f"model.head_init={hydra_value(head.resolve())}"]


def run_finetunes(
    plan: SelectPlan, chosen: list[Candidate], folder: Path, heads: dict[int, Path | None], seeds: list[int]
) -> None:
    """Fine-tune every chosen candidate with every seed; already completed runs are not run again."""
    remaining = {c.index: sorted(set(seeds) - completed_seeds(finetune_dir(folder, c))) for c in chosen}
    total = sum(len(left) for left in remaining.values())
    if total == 0:
        log.info("Fine-tunes: all %d runs completed before (resumed select): nothing to run", len(chosen) * len(seeds))
        return
    with PhaseProgress("Fine-tunes", total, unit="runs", where="through the chosen launcher") as progress:
        for candidate in chosen:
            sweep_dir = finetune_dir(folder, candidate)
            if not remaining[candidate.index]:
                log.info("Fine-tunes of %s: all %d seeds completed before, skipped", candidate.text, len(seeds))
                continue
            start = "the probe's head" if heads[candidate.index] else "a random head (random init: no probed network)"
            left = ",".join(map(str, remaining[candidate.index]))
            log.info("Fine-tunes of %s from %s: seeds %s in %s", candidate.text, start, left, sweep_dir)
            command = finetune_command(plan, candidate, heads[candidate.index], seeds, sweep_dir)
            _run_multirun(command, candidate, sweep_dir, progress)


def _run_multirun(command: list[str], candidate: Candidate, sweep_dir: Path, progress: PhaseProgress) -> None:
    """Run ``command``, advancing ``progress`` as its runs complete; a multirun that fails as a whole (not a
    job of it: those are recorded and reported) stops the select."""
    counted = _completed_runs(sweep_dir)
    process = subprocess.Popen(command)
    try:
        while process.poll() is None:
            time.sleep(POLL_S)
            counted = _advance(progress, sweep_dir, counted)
    except KeyboardInterrupt:  # Ctrl-C reached the multirun too: it writes last.ckpt and stops
        process.wait()
        raise
    _advance(progress, sweep_dir, counted)
    if process.returncode == 130:
        raise KeyboardInterrupt
    if process.returncode != 0:
        raise UserError(
            f"the fine-tunes of candidates[{candidate.index}] ({candidate.text}) stopped with exit status "
            f"{process.returncode} (its error is above; its runs are in {sweep_dir}); fix it and resume the select "
            "with the same command and resume=<select folder>"
        )


def _completed_runs(sweep_dir: Path) -> int:
    if not sweep_dir.is_dir():
        return 0
    summaries = (read_summary(job) for job in sweep_dir.iterdir() if job.is_dir() and job.name.isdigit())
    return sum(1 for summary in summaries if summary and summary.get("status") == "completed")


def _advance(progress: PhaseProgress, sweep_dir: Path, counted: int) -> int:
    now = _completed_runs(sweep_dir)
    if now > counted:
        progress.advance(now - counted)
    return max(now, counted)
