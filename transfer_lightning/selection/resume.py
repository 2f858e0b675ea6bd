"""``resume=<select folder>``: a killed select continues in its folder, with the same command.

The folder's ``.hydra/overrides.yaml`` (the command that started it) must hold the same overrides as
the resuming command, ``resume`` aside: the probes and fine-tunes in it answer that command's question
and no other. Checked in the command's first second, before Hydra writes anything.
"""

from __future__ import annotations

from pathlib import Path

from transfer_lightning.sweeps.results import job_overrides, read_overrides
from transfer_lightning.utils.errors import UserError

SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"


def check_resume_folder(folder: Path, task_overrides: list[str]) -> None:
    """Refuse ``resume=<folder>`` unless it is a select folder started by the same overrides."""
    saved_file = Path(folder).expanduser() / SAVED_OVERRIDES
    if not saved_file.is_file():
        raise UserError(
            f"resume={folder} is not a select folder (no {SAVED_OVERRIDES} in it); pass the folder a select "
            "wrote, outputs/select/<date>/<time>"
        )
    saved = read_overrides(saved_file)
    if saved is None:
        raise UserError(f"resume={folder}: {saved_file} is not a list of overrides; start a new select instead")
    if job_overrides(saved) != job_overrides(task_overrides):
        raise UserError(
            f"resume={folder} was a select of other overrides ({' '.join(job_overrides(saved)) or 'none'}); "
            "resume it with exactly its command, or start a new select without resume"
        )
