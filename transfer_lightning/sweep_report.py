"""`python -m transfer_lightning.sweep_report DIR`: rebuild the report of a multirun folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transfer_lightning.sweeps.report import collect_jobs, write_sweep_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transfer_lightning.sweep_report",
        description="Write sweep_summary.csv, sweep_report.md and the heatmap for a multirun folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder holding the job folders 0, 1, ...")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir() or not collect_jobs(args.sweep_dir):
        print(f"Error: {args.sweep_dir} holds no job folders (<number>/.hydra/overrides.yaml); "
              "pass a folder like outputs/multirun/<date>/<time>", file=sys.stderr)  # fmt: skip
        return 2
    for path in write_sweep_report(args.sweep_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
