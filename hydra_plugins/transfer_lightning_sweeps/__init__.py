"""Hydra finds sweeper plugins only in the ``hydra_plugins`` namespace; the logic lives in
``transfer_lightning.sweeps.optuna_search``."""

from transfer_lightning.sweeps import optuna_search


class OptunaSearchSweeper(optuna_search.OptunaSearch):
    """``hydra/sweeper`` for ``-m hparams_search=optuna`` (Optuna's own API; see optuna_search)."""
