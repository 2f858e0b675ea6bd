"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

import os
import sys

# Lightning's LR finder draws a tqdm bar (carriage returns, in log files too); its steps are shown by
# utils/progress.py instead (run/tuning.py). tqdm reads its TQDM_* defaults when it is first imported,
# so this comes before anything imports it. A bar that passes disable= itself is not affected.
os.environ.setdefault("TQDM_DISABLE", "1")

import hydra  # noqa: E402

import transfer_lightning.run.folders  # noqa: E402, F401 - Hydra's resolvers of the run folder
from transfer_lightning.utils.cli import (  # noqa: E402 - after TQDM_DISABLE
    CONFIG_FOLDER,
    check_command_line,
    checked_as_hydra_composes,
    exit_on_user_error,
    freeze_imported_objects,
    job_started,
    run_checked,
)


def main() -> None:
    """Train (the console script ``transfer-lightning`` runs this too): the config checked in the command's first
    second (before Hydra writes anything and before torch loads), then the run."""
    if checked_as_hydra_composes(sys.argv[1:]):
        run_checked(sys.argv[1:], _run)
        return
    exit_on_user_error(check_command_line, sys.argv[1:])
    from transfer_lightning.train import main as train_main

    freeze_imported_objects()
    train_main()


@hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name="config")
def _run(cfg) -> float | None:
    """One run, its config composed and checked (``ConfigCheck``) by Hydra: the training job."""
    job_started()
    from transfer_lightning.train import hydra_job

    freeze_imported_objects()
    return hydra_job(cfg)


if __name__ == "__main__":
    main()
