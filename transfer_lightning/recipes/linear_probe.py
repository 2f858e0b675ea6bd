"""The linear probe of LP-FT (``strategy=lp_ft``): the new head fitted on the frozen backbone's features
before training starts.

The features are the whole backbone's output (the pooled vector) for the training and validation
images, unaugmented, through the feature cache (``cache/setup.py``): exact, computed once and shared
by every run and seed on the same data. The head is fitted to convergence as a multinomial logistic
regression, the paper's linear probe: L-BFGS over the whole training set, with the run's loss
(label smoothing, class weights) plus an L2 penalty on the weights. A resumed run does not probe
again: its checkpoint holds the head the probe fitted and what trained since.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


def fit_linear_probe(module: Any, datamodule: Any, trainer: L.Trainer, resumed: bool) -> dict[str, Any] | None:
    """Fit ``module``'s head on the frozen features when its strategy asks for a probe (``probe_max_iter``);
    returns what the probe did, for ``run_summary.json``."""
    from transfer_lightning.cache.setup import frozen_output

    max_iter = getattr(module.strategy, "probe_max_iter", 0)  # only LP-FT probes (strategies/lp_ft.py)
    if not max_iter:
        return None
    if resumed:
        log.info("Linear probe: done when the run started; its head is in the checkpoint being resumed")
        return {"resumed": True}
    started = time.perf_counter()
    stage = module.backbone.num_stages
    features, source = frozen_output(datamodule, module, trainer, stage, ("train", "val"))
    device = trainer.strategy.root_device
    train, val = ((x.to(device), y.to(device)) for x, y in (features["train"], features["val"]))
    head = module.backbone.head()
    head.to(device)
    iterations, loss = _fit(module, head, stage, train, max_iter, module.strategy.probe_weight_decay)
    result = {
        "iterations": iterations,
        "converged": iterations < max_iter,
        "train_loss": round(loss, 5),
        "train_acc": _accuracy(module, stage, *train),
        "val_acc": _accuracy(module, stage, *val),
        "features": source,
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info(
        "Linear probe: the head fitted on %d frozen feature vectors (%s) in %d L-BFGS iterations%s: train acc "
        "%.4f, val acc %.4f, %.1fs (strategy.probe_max_iter)",
        len(train[1]), source, iterations, "" if result["converged"] else " (the limit: not converged)",
        result["train_acc"], result["val_acc"], result["seconds"],
    )  # fmt: skip
    return result


def _fit(
    module: Any, head: torch.nn.Module, stage: int, train: tuple[torch.Tensor, torch.Tensor], max_iter: int,
    weight_decay: float,
) -> tuple[int, float]:  # fmt: skip
    features, labels = train
    weights = [p for name, p in head.named_parameters() if not name.endswith("bias")]
    optimizer = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = module.loss(module.backbone.forward_from(features, stage), labels)
        loss = loss + weight_decay / 2 * sum(w.square().sum() for w in weights)
        loss.backward()
        return loss

    with torch.enable_grad():
        loss = optimizer.step(closure)
    iterations = next(iter(optimizer.state.values()))["n_iter"]
    return int(iterations), float(loss.detach())


def _accuracy(module: Any, stage: int, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = module.backbone.forward_from(features, stage).argmax(dim=1)
    return round(float((predicted == labels).float().mean()), 4)
