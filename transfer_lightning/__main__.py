"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

import os
import sys

# Lightning's LR finder draws a tqdm bar (carriage returns, in log files too); its steps are shown by
# utils/progress.py instead (run/tuning.py). tqdm reads its TQDM_* defaults when it is first imported,
# so this comes before anything imports it. A bar that passes disable= itself is not affected.
os.environ.setdefault("TQDM_DISABLE", "1")

from transfer_lightning.utils.cli import (  # noqa: E402 - after TQDM_DISABLE
    check_command_line,
    exit_on_user_error,
    freeze_imported_objects,
)


def main() -> None:
    """Train (the console script ``transfer-lightning`` runs this too): the command line checked in its first
    second (before Hydra writes anything and before torch loads), then the run."""
    exit_on_user_error(check_command_line, sys.argv[1:])
    from transfer_lightning.train import main as train_main

    freeze_imported_objects()
    train_main()


if __name__ == "__main__":
    main()
