"""`make dashboard-shots`: look at TensorBoard as a user meets it, in a real (headless) browser.

Trains a tiny run and a tiny 2 x 2 sweep (synthetic data, random init, CPU), starts TensorBoard on
127.0.0.1 over both, and saves headless-Chromium screenshots of Time Series, Images and HPARAMS:

    python scripts/dashboard_shots.py [--out outputs/dashboard_shots] [--chromium /usr/bin/chromium]

Time Series is opened with ``?forceSVG=true``: its WebGL charts render empty in headless mode.

``--mlflow`` shoots the MLflow UI instead: the same sweep with ``logger=[tensorboard,mlflow]`` into a
local server (``scripts/mlflow-local.sh``, stopped afterwards), and its experiment page, where the
sweep is a parent run with the jobs as its child runs (``mlflow_sweep.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from headless_chromium import FLAGS, HeadlessPage

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data=synthetic",
    "data.train_size=128",
    "model.weights=null",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "strategy=finetune",
]
RUN = ["optimizer.lr=0.01", "trainer.max_epochs=4"]
SWEEP = ["optimizer.lr=0.01,0.001", "strategy.frozen_stages=5,4", "trainer.max_epochs=3"]
# the MLflow runs table: the sweep's parameters and results beside the run names (a view the page loads by key)
MLFLOW_COLUMNS = ["params.`lr`", "params.`frozen_stages`", "metrics.`val/acc_best`", "metrics.`test/acc`"]
MLFLOW_VIEW = {
    "selectedColumns": MLFLOW_COLUMNS,
    "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *MLFLOW_COLUMNS],
    "columnWidths": {"attributes.`Run Name`": 260},
}
# the run-name cell's expander button, the shared-view banner's close button, the assistant panel's
MLFLOW_EXPANDER = '[data-component-id$="runnamecellrenderer.tsx_46"]'
MLFLOW_BANNER = '[data-component-id="mlflow.experiment_page.shared_view.dismiss"]'
MLFLOW_ASSISTANT = '[data-component-id="mlflow.assistant.chat_panel.close"]'
# page (TensorBoard URL suffix) -> screenshot file
PAGES = {
    "?forceSVG=true&tagFilter=acc#timeseries": "time_series.png",
    "#images": "images.png",
    "#hparams": "hparams.png",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "dashboard_shots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--reuse", action="store_true", help="keep the finished runs of an earlier call")
    parser.add_argument("--mlflow", action="store_true", help="the MLflow UI of the sweep instead of TensorBoard")
    args = parser.parse_args(argv)
    if args.mlflow:
        print(_mlflow_shot(args.out, args.chromium))
        return 0
    logs, shots = args.out / "logs", args.out / "shots"
    if not args.reuse:
        shutil.rmtree(logs, ignore_errors=True)
    if not (logs / "run" / "run_summary.json").is_file():
        _train([*RUN, f"hydra.run.dir={logs / 'run'}"], args.out)
    if not (logs / "sweep" / "sweep_summary.csv").is_file():
        _train(["--multirun", *SWEEP, f"hydra.sweep.dir={logs / 'sweep'}"], args.out)
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    board = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logs), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url)
        for page, name in PAGES.items():
            _screenshot(args.chromium, url + page, shots / name)
            print(shots / name)
    finally:
        board.terminate()
        board.wait(timeout=30)
    return 0


def _mlflow_shot(out: Path, chromium: str) -> Path:
    """The sweep logged to a fresh local MLflow server; a screenshot of its experiment page."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_LOCAL_DIR": str(out / "mlflow_server"), "PYTHON": sys.executable}
    server = ROOT / "scripts" / "mlflow-local.sh"
    started = subprocess.run([server, "start"], env=env, check=True, capture_output=True, text=True)
    uri = started.stdout.strip().rsplit("=", 1)[-1]  # export MLFLOW_TRACKING_URI=http://127.0.0.1:<port>
    try:
        shutil.rmtree(out / "mlflow_sweep", ignore_errors=True)
        # named as a sweep of outputs/multirun/<date>/<time> is: the parent <date>/<time>, the jobs <time>/<job>
        sweep = out / "mlflow_sweep" / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
        mlflow = ["logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri={uri}"]
        _train(["--multirun", *SWEEP, *mlflow, f"hydra.sweep.dir={sweep}"], out)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("transfer_lightning").experiment_id
        client.set_experiment_tag(experiment, "mlflow.sharedViewState.shots", json.dumps(MLFLOW_VIEW))
        path = out / "shots" / "mlflow_sweep.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with HeadlessPage(chromium, width=1400, height=700) as page:
            page.open(f"{uri}/#/experiments/{experiment}/runs?viewStateShareKey=shots")
            page.click(MLFLOW_EXPANDER)  # the parent run opens on its child runs
            page.click(MLFLOW_BANNER)
            page.click(MLFLOW_ASSISTANT)
            return page.screenshot(path)
    finally:
        subprocess.run([server, "stop"], env=env, check=True)


def _train(overrides: list[str], out: Path) -> None:
    flags = [item for item in overrides if item.startswith("--")]  # Hydra's flags go before the overrides
    rest = [item for item in overrides if not item.startswith("--")]
    command = [sys.executable, "-m", "transfer_lightning", *flags, *TINY, *rest, f"paths.data_dir={out / 'data'}"]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _screenshot(chromium: str, url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
                "--virtual-time-budget=20000",
                f"--screenshot={path}",
                url,
            ],  # fmt: skip
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,
        )


if __name__ == "__main__":
    sys.exit(main())
