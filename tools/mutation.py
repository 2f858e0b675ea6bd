"""Mutation testing of the core modules with mutmut (``make mutation``; not part of CI).

Each module is mutated in a scratch copy of the project (the working tree stays clean) and its
mutants are run against that module's own fast test subset. Prints one Markdown table row per module
(with its wall time) for ``docs/mutation.md``.

    python tools/mutation.py                          # every module below
    python tools/mutation.py transfer_lightning/cache/key.py
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the tests of test_resume.py that call resume's code in this process (the others run the CLI in a
# subprocess, which mutmut neither sees nor needs to rerun per mutant)
IN_PROCESS_RESUME_TESTS = (
    "(rules or command or other_classes or early_stopping or fits_its_own or unpickling or schedule_length "
    "or every_n_steps or folder or prepare or refused_in_its or dotted or restored) and not killed_run and not exits_2"
)

# module -> the pytest arguments of its fast test subset. No test that starts the CLI or DDP in a subprocess: it
# inherits mutmut's MUTANT_UNDER_TEST and fails in mutmut's copy (and mutmut cannot see what it runs anyway)
MODULES: dict[str, list[str]] = {
    "transfer_lightning/strategies/base.py": [
        "tests/test_strategies.py",
        "tests/test_gradual.py",
        "-k",
        "not cli and not ddp and not kill",
    ],
    # strategies/freeze_stages.py is a class with no code of its own (its presets are base.py's)
    "transfer_lightning/strategies/gradual.py": ["tests/test_gradual.py", "-k", "not ddp and not kill"],
    "transfer_lightning/cache/key.py": ["tests/test_cache_key.py"],
    "transfer_lightning/cache/setup.py": ["tests/test_feature_cache.py", "-k", "not cli_run"],
    "transfer_lightning/cache/plan.py": [
        "tests/test_cache_plan.py",
        "tests/test_feature_cache.py",
        "tests/test_backbones.py",
        "-k",
        "plan or shape or off or stays_off or misses_through or no_chain",
    ],
    # in-process tests only: a test that trains through the CLI (the shared ``trained_run`` fixture) would
    # retrain for every mutant
    "transfer_lightning/data/contract.py": ["tests/test_contract.py", "-k", "not pinned and not learns"],
    "transfer_lightning/data/decode.py": [
        "tests/test_decode.py",
        "tests/test_image_folder.py",
        "tests/test_contract.py",
        "-k",  # "the_cli", not "cli": a plain "cli" also drops the tests named "..._not_clipped"
        "not the_cli and not ddp and not pinned and not learns",
    ],
    "transfer_lightning/utils/files.py": [
        "tests/test_files.py",
        "tests/test_run_checkpoint.py",
        "tests/test_weights.py",
    ],
    "transfer_lightning/run/checkpoint.py": [
        "tests/test_checkpoint_files.py",
        "tests/test_run_checkpoint.py",
        "tests/test_weights.py",
        "tests/test_resume.py",
        "tests/test_contract.py",
        "-k",
        f"({IN_PROCESS_RESUME_TESTS}) or test_checkpoint_files or link or last or (weights and not cli) or every_file",
    ],
    "transfer_lightning/run/resume.py": [
        "tests/test_resume_rules.py",
        "tests/test_resume.py",
        "-k",
        IN_PROCESS_RESUME_TESTS,
    ],
}
# besides the package and tests/ (which mutmut copies itself), what the tests read
ALSO_COPY = ["conf", "hydra_plugins"]


def mutmut_config(module: str, tests: list[str]) -> str:
    """The ``[tool.mutmut]`` table for one module: mutate only it, run only its tests."""
    settings = {
        "source_paths": ["transfer_lightning"],
        "only_mutate": [module],
        "also_copy": ALSO_COPY,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "pytest_add_cli_args_test_selection": tests,
        "process_isolation": "forkserver",  # torch is not fork-safe once the suite ran
        "use_git_change_detection": False,
        # a forked worker's start-up (importing torch) dwarfs these tests' own milliseconds; on a shared
        # machine mutmut's default (15 x the test's time + 1 s) reports every mutant as a timeout
        "timeout_constant": 60.0,
    }
    return "\n[tool.mutmut]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


def mutate(module: str, tests: list[str]) -> dict[str, int]:
    """Run mutmut on ``module`` in a scratch copy; its killed/survived/total counts."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        copy = Path(scratch) / "project"
        tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        for name in tracked.stdout.splitlines():
            if (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
        pyproject = copy / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + mutmut_config(module, tests))
        # one thread per mutmut worker: the workers (one per core) already keep every core busy, and torch's
        # own threads on top of them only contend
        single_threaded = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        ran = subprocess.run([sys.executable, "-m", "mutmut", "run"], cwd=copy, env=single_threaded)
        if ran.returncode != 0:  # e.g. the subset's tests fail in mutmut's copy: no score, the next module goes on
            print(f"{module}: mutmut run failed (exit {ran.returncode}); no score", flush=True)
            return {"total": 0, "killed": 0}
        subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=copy, check=True)
        survivors = subprocess.run(
            [sys.executable, "-m", "mutmut", "results"], cwd=copy, capture_output=True, text=True
        )
        for line in survivors.stdout.splitlines():  # each surviving mutant's diff, for docs/mutation.md
            name, _, status = line.strip().rpartition(": ")
            if status == "no tests":
                print(f"{name}: no tests", flush=True)  # no test of the subset reaches this function
            if status == "survived":
                shown = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=copy, capture_output=True)
                print(f"{name}: survived\n{shown.stdout.decode(errors='replace')}", flush=True)
        return json.loads((copy / "mutants" / "mutmut-cicd-stats.json").read_text())


def table_row(module: str, stats: dict[str, int], commit: str, seconds: float) -> str:
    score = 100.0 * stats["killed"] / max(stats["total"], 1)
    date = datetime.date.today().isoformat()
    return (
        f"| `{module}` | {stats['total']} | {stats['killed']} | {stats.get('survived', 0)} | "
        f"{stats.get('no_tests', 0)} | {score:.1f} % | {seconds / 60:.0f} min | {date} | {commit} |"
    )


HEADER = "| module | mutants | killed | survived | no test | score | wall | date | commit |\n" + "| --- " * 9 + "|"


def main(modules: list[str]) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    rows = []
    begun = time.monotonic()
    for module in modules or MODULES:
        started = time.monotonic()
        stats = mutate(module, MODULES[module])
        rows.append(table_row(module, stats, commit.strip(), time.monotonic() - started))
        print(f"{HEADER}\n{rows[-1]}", flush=True)  # each module's row as soon as it is measured
    print(HEADER)
    print("\n".join(rows))
    print(f"total wall: {(time.monotonic() - begun) / 60:.0f} min for {len(rows)} module(s)")


if __name__ == "__main__":
    # stopped with kill (SIGTERM): unwind, so mutmut is stopped and the scratch copy in the temp folder removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    main(sys.argv[1:])
