"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

import sys

from transfer_lightning.utils.cli import check_command_line, exit_on_user_error


def main() -> None:
    """The command line checked in its first second (before Hydra writes anything and before torch loads),
    then the run."""
    exit_on_user_error(check_command_line, sys.argv[1:])
    from transfer_lightning.train import main as train_main

    train_main()


if __name__ == "__main__":
    main()
