"""The three stages of a select, in its folder: probe every candidate, fine-tune the best, report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transfer_lightning.config.schemas import ProbeSchema, StatsSchema
from transfer_lightning.models import backbone_class
from transfer_lightning.models.lineage import is_random_init
from transfer_lightning.selection.candidates import SelectPlan
from transfer_lightning.selection.finetune import finetune_dir, run_finetunes, seed_values
from transfer_lightning.selection.probe import PROBES, head_path, probe_candidate, read_probe
from transfer_lightning.selection.report import console_report, winner_command, write_select_report
from transfer_lightning.selection.results import collect_results
from transfer_lightning.utils.log_filters import install_log_filters
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger("transfer_lightning")
install_log_filters()  # Lightning's advertising and known-harmless warnings (log_filters.py)


def run_select(cfg: DictConfig, folder: Path, plan: SelectPlan) -> dict[str, Any]:
    """Probe, fine-tune and report the candidates of ``plan`` (the select config ``cfg``) in ``folder``."""
    configs = {c.index: plan.compose(c) for c in plan.candidates}
    for candidate in plan.candidates:  # every model name and its weights, before any data is read
        model = configs[candidate.index].model
        backbone_class(model).ensure_weights(model.name, model.weights)
    probe, stats = _settings(cfg.probe, ProbeSchema), _settings(cfg.stats, StatsSchema)

    probes = {c.index: saved for c in plan.candidates if (saved := read_probe(folder, c)) is not None}
    for saved in probes.values():
        log.info("Probe of %s: read from %s (resumed select), val acc %.4f", saved.candidate, PROBES, saved.val_acc)
    to_probe = [c for c in plan.candidates if c.index not in probes]
    with PhaseProgress("Probes", len(to_probe), unit="candidates") as progress:
        for candidate in to_probe:
            overrides = plan.training_overrides(candidate)
            probes[candidate.index] = probe_candidate(
                configs[candidate.index], overrides, candidate, folder, probe, stats
            )
            progress.advance()

    by_probe = sorted(plan.candidates, key=lambda c: (-probes[c.index].val_acc, c.index))
    chosen = by_probe[: cfg.top_k]
    # LP-FT needs the probed network: a random init is another network for every seed, so its head starts random
    heads = {
        c.index: None if is_random_init(configs[c.index].model.weights) else head_path(folder, c)
        for c in plan.candidates
    }
    if chosen:
        log.info("Fine-tuning the %d best probes: %s", len(chosen), "; ".join(c.text for c in chosen))
        run_finetunes(plan, chosen, folder, heads, seed_values(cfg.seeds))

    results = collect_results(
        list(plan.candidates), probes, chosen, {c.index: finetune_dir(folder, c) for c in chosen}, stats
    )
    written = write_select_report(folder, results, plan, heads, probe, stats)
    print(console_report(results, written, winner_command(results, plan, heads)))
    return {"folder": str(folder), "winner": results.winner.candidate.text if results.winner else None}


def _settings(node: DictConfig, schema: type) -> Any:
    return schema(**OmegaConf.to_container(node, resolve=True))
