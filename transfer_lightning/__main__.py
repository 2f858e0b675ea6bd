"""`python -m transfer_lightning ...`: train one experiment (or a sweep with -m)."""

import sys

from transfer_lightning.cli import run_tool
from transfer_lightning.resume import check_resume_command

if __name__ == "__main__":
    run_tool(check_resume_command, sys.argv[1:])  # before Hydra writes anything into the run folder
    from transfer_lightning.train import main

    main()
