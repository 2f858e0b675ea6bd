"""`python -m transfer_lightning.sweep_report DIR`: the ranked jobs and the winner's command line of a
multirun folder, as the end of the sweep printed them, and its report files rebuilt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transfer_lightning.sweeps.results import collect_jobs, print_ranking, write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfer_lightning.sweep_report",
        description="Print the ranked jobs and the winner's command; rewrite sweep_summary.csv, sweep_report.md "
        "and the plot of a multirun folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding the job folders 0, 1, ...")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir() or not collect_jobs(args.sweep_dir):
        print(f"Error: {args.sweep_dir} holds no job folders (<number>/.hydra/overrides.yaml); "
              "pass a folder like outputs/multirun/<date>/<time>", file=sys.stderr)  # fmt: skip
        return 2
    written = write_sweep_report(args.sweep_dir)
    print_ranking(args.sweep_dir)
    print("Report: " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
