"""`python -m transfer_lightning.sweep_report DIR`: the ranked jobs and the winner's command line of a
multirun folder, as the end of the sweep printed them, and its report files rebuilt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transfer_lightning.sweeps.results import collect_jobs, print_ranking, write_sweep_report
from transfer_lightning.utils.cli import exit_on_user_error
from transfer_lightning.utils.errors import UserError


def report(sweep_dir: Path) -> list[Path]:
    """Rewrite the report files of the multirun folder ``sweep_dir`` and print its ranking; returns the files.

    The folder may be someone else's: its files are data (``sweeps/results.py`` checks each value)."""
    if not sweep_dir.is_dir() or not collect_jobs(sweep_dir):
        raise UserError(
            f"{sweep_dir} holds no job folders (<number>/.hydra/overrides.yaml); pass a folder like "
            "outputs/multirun/<date>/<time>"
        )
    written = write_sweep_report(sweep_dir)
    print_ranking(sweep_dir)
    print("Report: " + ", ".join(str(path) for path in written))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfer_lightning.sweep_report",
        description="Print the ranked jobs and the winner's command; rewrite sweep_summary.csv, sweep_report.md "
        "and the plot of a multirun folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding the job folders 0, 1, ...")
    exit_on_user_error(report, parser.parse_args(argv).sweep_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
