"""Bayesian search with Optuna's own API, as a Hydra sweeper (``-m hparams_search=optuna``).

hydra-optuna-sweeper 1.3.0 (the newest release) requires ``optuna<3``, and optuna 2.x's SQLite
storage breaks under SQLAlchemy 2; so the search is written against a maintained Optuna here.
Each trial is one Hydra job (any launcher); the job returns its best val accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def distribution(spec: dict[str, Any]) -> Any:
    """``{type: float|int|categorical, low, high, log, choices}`` -> an Optuna distribution."""
    import optuna.distributions as d

    kind = spec.get("type", "float")
    if kind == "float":
        return d.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))
    if kind == "int":
        return d.IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return d.CategoricalDistribution(list(spec["choices"]))


class OptunaSearch(Sweeper):
    """Ask Optuna for ``n_jobs`` trials at a time, launch them as Hydra jobs, tell their results."""

    def __init__(self, params: Any, n_trials: int = 20, n_jobs: int = 1, direction: str = "maximize",
                 storage: str | None = None, study_name: str = "transfer_lightning", seed: int = 0) -> None:  # fmt: skip
        self.params = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) else dict(params)
        self.n_trials, self.n_jobs, self.direction = n_trials, n_jobs, direction
        self.storage, self.study_name, self.seed = storage, study_name, seed

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed), load_if_exists=True,
        )  # fmt: skip
        spaces = {key: distribution(spec) for key, spec in self.params.items()}
        done = 0
        while done < self.n_trials:
            trials = [study.ask(spaces) for _ in range(min(self.n_jobs, self.n_trials - done))]
            overrides = [[*arguments, *(f"{k}={v}" for k, v in trial.params.items())] for trial in trials]
            for trial, result in zip(trials, self.launcher.launch(overrides, initial_job_idx=done), strict=True):
                # None: the job failed (recorded in its run_summary.json)
                value = result.return_value if result.status == JobStatus.COMPLETED else None
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, float(value))
            done += len(trials)
        best = study.best_trial
        results = {"best_value": best.value, "best_params": best.params, "storage": self.storage}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
        log.info("Optuna's best trial: %s", sweep_dir / "optimization_results.yaml")  # the ranking below shows it
        return results
