"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

import sys

from transfer_lightning.utils.cli import check_command_line, run_tool

if __name__ == "__main__":
    run_tool(check_command_line, sys.argv[1:])  # before Hydra writes anything, and before torch loads
    from transfer_lightning.train import main

    main()
