"""``python -m transfer_lightning.select``: which pretrained model for my data, and how sure.

Three stages in one select folder (``outputs/select/<date>/<time>/``, ``conf/select.yaml``):

1. probe every candidate on cached features (``selection/probe.py``): val accuracy with a 95 % interval,
   parameters, images/s;
2. fine-tune the ``top_k`` best probes with ``seeds`` seeds, each run an ordinary run folder launched
   through the chosen Hydra launcher, its head starting from the probe (``selection/finetune.py``);
3. report (``selection/results.py``, ``selection/report.py``): the ranked table, the Pareto plot, the paired
   test of the winner against the runner-up, the winner's command.

``resume=<select folder>`` with the same command continues a killed select: saved probes are read, not
redone, and completed fine-tunes are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from transfer_lightning.config.compose import compose_checked
from transfer_lightning.run import job
from transfer_lightning.selection.candidates import SelectPlan
from transfer_lightning.selection.resume import check_resume_folder
from transfer_lightning.utils.cli import (
    CONFIG_FOLDER,
    check_command_line,
    check_once,
    exit_on_user_error,
    freeze_imported_objects,
    run_tool,
    runs_a_job_of_this_config,
    searchpath_overrides,
    split_flags,
    with_config_dir,
)


def select(cfg: DictConfig) -> dict[str, Any]:
    """Probe, fine-tune and report the candidates of ``cfg`` in its select folder (``selection/stages.py``)."""
    from transfer_lightning.selection.stages import run_select

    check_once(cfg)
    plan = SelectPlan.of(cfg, job.task_overrides(), job.launcher_overrides(), job.user_searchpath())
    return run_select(cfg, Path(cfg.paths.output_dir), plan)


def check_select_command(argv: list[str]) -> None:
    """The select command's own checks in its first second (no torch): every candidate's training config
    composed and checked, and a ``resume=<folder>`` that is a select of the same command."""
    if not runs_a_job_of_this_config(argv):
        return
    flags, typed = split_flags(argv)
    overrides = with_config_dir(flags, typed)
    task = [item for item in overrides if not _is_hydra(item)]
    cfg = compose_checked(CONFIG_FOLDER, "select", overrides)
    plan = SelectPlan.of(cfg, task, [item for item in overrides if _is_hydra(item)], searchpath_overrides(overrides))
    for candidate in plan.candidates:
        plan.compose(candidate)
    if cfg.resume:
        check_resume_folder(Path(cfg.resume), task)


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


@hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name="select")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run_tool(select, cfg)
    except KeyboardInterrupt:
        print(f"Interrupted: continue with the same command and resume={cfg.paths.output_dir}", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """``python -m transfer_lightning.select``: the command line checked in its first second, then the select
    (a ``UserError`` is one line on stderr and exit status 2)."""
    exit_on_user_error(check_command_line, sys.argv[1:], "select")
    exit_on_user_error(check_select_command, sys.argv[1:])
    import transfer_lightning.run.resume  # noqa: F401 - the tl.run_dir resolver of conf/hydra/select.yaml (torch)
    import transfer_lightning.selection.stages  # noqa: F401 - what the probes need, imported before the freeze

    freeze_imported_objects()
    _hydra_main()


if __name__ == "__main__":
    main()
