"""Continue a killed run in its own folder: ``resume=<run folder>`` or ``ckpt_path=<run>/checkpoints/last.ckpt``.

The run folder's ``.hydra/config.yaml`` is the experiment; the command line may only change the
settings in ``ALLOWED_ON_RESUME`` (how long to train, where the data and devices are). Everything
else (model, classes, strategy, optimizer, schedule, checkpoint and early-stopping settings) must
match, or Lightning would silently drop state (optimizer, callback state keyed by monitor/mode)
or train something else than the checkpoint holds.

Hydra's run folder is the resumed one (the ``tl.run_dir`` resolver, ``run/folders.py``);
the new command's composed config goes to ``.hydra/resumed-<time>/`` so the original stays.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from transfer_lightning.config.check import closest
from transfer_lightning.config.trust import check_recorded
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.loggers.nodes import SINGLE, logger_nodes
from transfer_lightning.run import job
from transfer_lightning.run.checkpoint import load_checkpoint_safely
from transfer_lightning.run.folders import RESUMED_SUBDIR, SAVED_CONFIG, run_folder_of
from transfer_lightning.run.model_record import (
    RECORD_KEY,
    SETTINGS_SCHEMAS,
    ModelRecord,
    check_recorded_node,
    read_model_record,
    schema_defaults,
)
from transfer_lightning.utils.errors import UserError, first_line

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"

# Settings a resumed run may change; listed in docs/reliability.md.
ALLOWED_ON_RESUME: tuple[str, ...] = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.root",
    "data.num_workers",
    "paths.data_dir",
    "test",
    "trusted_classes",
)
# What the checkpoint's hyperparameters must share with the config that resumes it.
_MUST_MATCH = ("model", "strategy", "optimizer", "scheduler", "class_names", "preprocessing", "loss", "ema")
_IGNORED = {"model.weights"}  # the checkpoint's weights replace whatever model.weights names
_ABSENT = object()


class ResumeRefused(UserError):
    """A checkpoint this run cannot continue from: refused before training, so the run records nothing."""


def original_overrides(ckpt_path: Any) -> list[str]:
    """The command-line overrides of the run that ``ckpt_path`` continues (none for a fresh run)."""
    run = run_folder_of(None, ckpt_path)
    saved = Path(run) / SAVED_OVERRIDES if run else None
    return [str(item) for item in OmegaConf.load(saved)] if saved and saved.is_file() else []


def prepare_resume(cfg: DictConfig) -> DictConfig:
    """The config to run: ``cfg`` itself, or the resumed run's saved config plus allowed overrides.

    The result's ``ckpt_path`` names the checkpoint to continue from. Raises ``UserError`` for a
    missing run folder or checkpoint, or an override that would change the experiment (the CLI
    makes the same checks before Hydra starts: ``check_resume_command``).
    """
    resume = cfg.get("resume")
    if resume is None or job.is_multirun():
        return cfg  # a sweep's resume=true is the sweep's business
    overrides = _override_keys()
    saved, checkpoint = _resumable_run(resume, bool(cfg.get("ckpt_path")))
    check_resume_overrides(saved, {key: OmegaConf.select(cfg, key) for key, _ in overrides}, dict(overrides), resume)
    for key, _ in overrides:
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key))  # a saved config is not in struct mode
    with open_dict(saved):
        saved.resume = None
        saved.ckpt_path = str(checkpoint.resolve())
        # where this run writes is this command's: its run folder is the folder named by resume=
        saved.paths.root_dir = cfg.paths.root_dir
        saved.paths.output_dir = cfg.paths.output_dir
    check_saved_config(saved, str(Path(resume) / SAVED_CONFIG))
    OmegaConf.set_struct(saved, True)
    log.info("Resuming %s from %s", resume, checkpoint.name)
    return saved


def check_resume_command(argv: list[str]) -> None:
    """Refuse a ``resume=<run folder>`` command line that cannot continue that run, before Hydra composes
    (or writes) anything: overrides are checked against the run's own config, not the default one (so
    ``resume=<gradual run> strategy.unfreeze_every=2`` is refused as a change, not as an unknown key).
    A multirun's ``resume`` names a sweep and is left to ``sweeps.resume``.
    """
    if any(arg in ("-m", "--multirun") for arg in argv):
        return
    try:
        parsed = OverridesParser.create().parse_overrides([arg for arg in argv if not arg.startswith("-")])
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report
        return
    task = [o for o in parsed if not o.key_or_group.startswith(("hydra.", "hydra/")) and o.key_or_group != "hydra"]
    resume = next((o.value() for o in task if o.key_or_group == "resume"), None)
    if not isinstance(resume, str) or not resume:
        return
    ckpt_given = any(o.key_or_group == "ckpt_path" and o.value() not in (None, "") for o in task)
    saved, _ = _resumable_run(resume, ckpt_given)
    keyed = [(_override_key(o, o.input_line), o) for o in task if o.key_or_group not in ("resume", "ckpt_path")]
    values = {key: o.value() for key, o in keyed}
    check_resume_overrides(saved, values, {key: o.input_line for key, o in keyed}, resume)


def check_resume_overrides(saved: DictConfig, values: dict[str, Any], texts: dict[str, str], resume: str) -> None:
    """Refuse overrides (``key -> new value``, ``key -> the override as typed``) that a resumed run cannot take.

    Only ``ALLOWED_ON_RESUME`` may change; a key the run's config does not have is named with the
    closest key it has; a longer or shorter ``trainer.max_epochs`` under a schedule that spans
    ``trainer.max_epochs`` (``scheduler=cosine``) is refused with the reason.
    """
    allowed = f"a resumed run may only change {', '.join(ALLOWED_ON_RESUME)}"
    for key, text in texts.items():
        if key in ALLOWED_ON_RESUME:
            continue
        current = OmegaConf.select(saved, key, default=_ABSENT)
        if current is _ABSENT:
            guess = closest(key, _dotted_keys(saved))
            hint = f" (did you mean {guess}?)" if guess else ""
            raise UserError(f"resume={resume}: {text} is not a setting of that run{hint}; {allowed}")
        shown = "" if OmegaConf.is_config(current) else f" ({current!r} in that run)"
        raise UserError(
            f"resume={resume}: {text} would change {key}{shown}, part of the experiment its checkpoint was trained "
            f"with; {allowed}, or start a new run"
        )
    if "trainer.max_epochs" in values:
        _check_schedule_length(saved, values["trainer.max_epochs"], resume)


def _check_schedule_length(saved: DictConfig, max_epochs: Any, resume: str) -> None:
    """A schedule computed over ``trainer.max_epochs`` (cosine) is part way along when the run stopped:
    another length would change the rates of the epochs already planned, so it is refused."""
    scheduler = saved.get("scheduler")
    if not OmegaConf.is_dict(scheduler) or "max_epochs" not in scheduler:
        return
    raw = OmegaConf.to_container(scheduler).get("max_epochs")  # unresolved: does it follow trainer.max_epochs?
    before = saved.trainer.get("max_epochs")
    if raw == "${trainer.max_epochs}" and max_epochs != before:
        raise UserError(
            f"resume={resume}: trainer.max_epochs={max_epochs} cannot change that run's schedule: its scheduler "
            f"decays the learning rate over scheduler.max_epochs = trainer.max_epochs = {before} epochs and the "
            f"checkpoint is part way along that curve; resume with trainer.max_epochs={before}, or start a new run "
            "with the length you want"
        )


def _resumable_run(resume: Any, ckpt_given: bool) -> tuple[DictConfig, Path]:
    """The saved config and ``last.ckpt`` of the run folder ``resume``; ``UserError`` when there is none."""
    if not isinstance(resume, str):
        raise UserError(
            f"resume={resume!r} is not a run folder; give the folder of the run to continue, "
            "e.g. resume=outputs/2026-01-31/12-00-00"
        )
    if ckpt_given:
        raise UserError("give either resume=<run folder> or ckpt_path=<file>, not both")
    folder = Path(resume).expanduser()
    saved_path = folder / SAVED_CONFIG
    if not saved_path.is_file():
        raise UserError(f"resume={resume}: {saved_path} does not exist; give the folder of a run (it holds .hydra/)")
    checkpoint = folder / LAST_CHECKPOINT
    if not checkpoint.is_file():
        raise UserError(f"resume={resume}: {checkpoint} does not exist, so there is nothing to resume; start anew")
    saved = read_saved_config(saved_path)
    read_model_record(load_checkpoint_safely(checkpoint, mmap=True), checkpoint)  # data too: checked before it runs
    return saved, checkpoint


# where a run folder's saved config may name a class to build, and which kind (config/trust.py)
RUN_CONFIG_POSITIONS = {
    "data": "data",
    "strategy": "strategy",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "trainer": "trainer",
    "logger": "logger",
    "logger.*": "logger",
    "callbacks.*": "callbacks",
}
# the settings that say where a run writes: inside its run folder or its data folder, whatever the file says
_WRITE_KEYS = ("trainer.default_root_dir", "data.cache_dir", "data.feature_cache_dir", "logger.save_dir")


def read_saved_config(path: Path) -> DictConfig:
    """A run folder's ``.hydra/config.yaml``: data, so its classes are checked against the allowlist and its
    interpolations against the allowed resolvers before anything is built (``config/trust.py``)."""
    try:
        saved = OmegaConf.load(path)
        values = OmegaConf.to_container(saved, resolve=False)
    except Exception as error:  # noqa: BLE001 - any unreadable YAML is a damaged run folder
        raise UserError(
            f"{path} cannot be read as a run's config ({first_line(error)}); the run folder is damaged"
        ) from None
    if not isinstance(values, dict) or not isinstance(values.get("paths"), dict):
        raise UserError(f"{path} is not the config of a run of python -m transfer_lightning (it has no paths)")
    check_recorded(values, str(path), "config", RUN_CONFIG_POSITIONS)
    return saved


def check_saved_config(saved: DictConfig, source: str) -> None:
    """Every built node of a saved config against its class's schema, and every folder it writes to inside the
    run folder or the data folder."""
    nodes = [(key, saved.get(key)) for key in ("data", "strategy", "optimizer", "scheduler", "trainer")]
    nodes += [(f"callbacks.{name}", node) for name, node in (saved.get("callbacks") or {}).items()]
    loggers = [(f"logger.{name}", node) for name, node in logger_nodes(saved.get("logger")).items() if name != SINGLE]
    nodes += loggers
    try:
        for key, node in nodes:
            kind = key.split(".", 1)[0]
            if OmegaConf.is_dict(node) and "_target_" in node:
                check_recorded_node(OmegaConf.to_container(node, resolve=True), kind, source, f"config.{key}")
        run_dir = Path(str(saved.paths.output_dir)).absolute()
        data_dir = Path(str(saved.paths.data_dir)).expanduser().absolute()
        folders = [(key, OmegaConf.select(saved, key)) for key in _WRITE_KEYS]
        folders += [(f"callbacks.{name}.dirpath", node.get("dirpath")) for name, node in nodes_with_dirpath(saved)]
        folders += [(f"{key}.save_dir", node.get("save_dir")) for key, node in loggers if "save_dir" in node]
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - an interpolation that does not resolve, a value of a wrong kind
        raise UserError(f"{source} is refused: {first_line(error)}; the run folder is damaged or was edited") from None
    for key, folder in folders:
        where = Path(str(folder)).expanduser().absolute() if folder else None
        if where is not None and not (where.is_relative_to(run_dir) or where.is_relative_to(data_dir)):
            raise UserError(
                f"{source} is refused: config.{key}={folder} would write outside the run folder {run_dir} and the "
                f"data folder {data_dir}; nothing was created or written"
            )


def nodes_with_dirpath(saved: DictConfig) -> list[tuple[str, Any]]:
    callbacks = saved.get("callbacks") or {}
    return [(name, node) for name, node in callbacks.items() if OmegaConf.is_dict(node) and "dirpath" in node]


def forget_refused_resume(error: UserError) -> None:
    """Remove the ``.hydra/resumed-<time>/`` Hydra wrote for a resume that was then refused: a refused
    resume leaves the run folder as it was (``run_summary.json`` is not touched either: see ``faults``)."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    subdir = str(hydra.output_subdir or "")
    if subdir.startswith(f"{RESUMED_SUBDIR}-"):
        shutil.rmtree(Path(hydra.runtime.output_dir) / subdir, ignore_errors=True)
        log.info("Resume refused; %s removed (%s)", subdir, first_line(error))


def check_checkpoint_fits(
    ckpt_path: str | Path,
    current: ModelRecord | Mapping[str, Any],
    callback_keys: list[str],
    checkpoint_dir: str | None,
) -> None:
    """Refuse a checkpoint trained with another model, classes, strategy, optimizer or schedule, or
    whose checkpoint/early-stopping state no callback of this run would take back (Lightning matches
    that state by monitor, mode and save frequency, and silently drops what does not match).

    ``current``: the run's record, or its config nodes (``model``, ``strategy`` ...). Loads the file with
    ``weights_only=True`` (a file needing arbitrary unpickling is refused) and reads its record as data.
    """

    checkpoint = load_checkpoint_safely(ckpt_path)
    if not isinstance(checkpoint, dict) or not (
        isinstance(checkpoint.get(RECORD_KEY), dict) or isinstance(checkpoint.get("hyper_parameters"), dict)
    ):
        raise ResumeRefused(f"checkpoint {ckpt_path} has no {RECORD_KEY} record; it was not written by this project")
    try:
        saved = _comparable(read_model_record(checkpoint, ckpt_path))
    except UserError as error:
        raise ResumeRefused(str(error)) from None
    current = _comparable(current)
    differences = []
    for key in _MUST_MATCH:
        differences += _differences(key, saved.get(key), current.get(key))
    saved_length, length = _schedule_length(saved), _schedule_length(current)
    if saved_length != length:
        raise ResumeRefused(
            f"checkpoint {ckpt_path} is part way along a schedule over {saved_length} epochs "
            f"(scheduler.max_epochs, which follows trainer.max_epochs); this config's spans "
            f"{length}: the schedule cannot change mid-run, so resume with "
            f"trainer.max_epochs={saved_length} or start a new run"
        )
    if differences:
        shown = "; ".join(differences[:4]) + (f" (+{len(differences) - 4} more)" if len(differences) > 4 else "")
        raise ResumeRefused(
            f"checkpoint {ckpt_path} does not match this config ({shown}); resume with the run's own settings "
            f"(only {', '.join(ALLOWED_ON_RESUME)} may change) or start a new run"
        )
    orphaned = [
        key
        for key in checkpoint.get("callbacks") or {}
        if key.startswith(("ModelCheckpoint", "RunCheckpoint", "EarlyStopping")) and key not in callback_keys
    ]
    if orphaned:
        raise ResumeRefused(
            f"checkpoint {ckpt_path} holds callback state {orphaned[0]} that no callback of this config would "
            "restore (its monitor, mode or save frequency changed); resume with the run's own callbacks.* settings"
        )
    saved_dir = _saved_checkpoint_dir(checkpoint)
    if checkpoint_dir and saved_dir and Path(saved_dir) != Path(checkpoint_dir):
        log.warning(
            "Continuing from a checkpoint written in %s: this run checkpoints to %s, so its best-checkpoint "
            "bookkeeping starts afresh (resume=<run folder> continues in place)",
            saved_dir,
            checkpoint_dir,
        )


def restore_weights(module: Any, ckpt_path: str | Path) -> None:
    """Load the checkpoint's weights (and their lineage) into ``module`` before training starts.

    A resumed run is built without its pretrained weights (nothing is fetched); Lightning restores the
    state dict only inside ``fit``, but the feature cache computes the frozen stages' output before
    that, so they must already be the trained ones.
    """

    checkpoint = load_checkpoint_safely(ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    module.weights_lineage = read_model_record(checkpoint, ckpt_path).lineage


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a config, dotted (``strategy.unfreeze_every``), for a did-you-mean."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node)  # unresolved: a saved ${hydra:...} cannot resolve here
    if not isinstance(node, dict):
        return []
    return [k for name, value in node.items() for k in (f"{prefix}{name}", *_dotted_keys(value, f"{prefix}{name}."))]


def _override_keys() -> list[tuple[str, str]]:
    """(key, the override as typed) of the command line's task overrides, ``resume`` excluded."""
    typed = job.task_overrides()
    parsed = OverridesParser.create().parse_overrides(typed)
    return [
        (_override_key(override, text), text)
        for override, text in zip(parsed, typed, strict=True)
        if override.key_or_group != "resume"
    ]


def _override_key(override: Any, text: str) -> str:
    """The dotted key of a plain ``key=value`` override; an added/deleted key (``+``, ``++``, ``~``) as typed."""
    plain = not override.is_add() and not override.is_delete() and not override.is_force_add()
    return override.key_or_group if plain else text


def _comparable(value: ModelRecord | Mapping[str, Any]) -> dict[str, Any]:
    """A record, or a run's config nodes, as the plain values a resume compares: ``_partial_`` aside, and what
    older checkpoints left implicit made explicit (the contract's defaults, the backbone ``model.name`` implies)."""
    if isinstance(value, ModelRecord):
        return value.to_dict(lineage={}, strategy_state={})
    plain = {key: _plain(value.get(key)) for key in _MUST_MATCH}
    for key, schema in SETTINGS_SCHEMAS.items():  # a config without loss / ema trains as their defaults do
        plain[key] = plain[key] or schema_defaults(schema)
    for key in ("strategy", "optimizer", "scheduler"):
        if isinstance(plain[key], dict):
            plain[key] = {name: item for name, item in plain[key].items() if name != "_partial_"} or None
    if isinstance(plain["preprocessing"], dict) and "image_size" in plain["preprocessing"]:
        plain["preprocessing"] = Preprocessing.from_dict(plain["preprocessing"]).to_dict()
    model = plain["model"]
    if isinstance(model, dict) and not model.get("backbone") and model.get("name"):
        from transfer_lightning.models import backbone_class

        family = backbone_class(model)
        plain["model"] = {**model, "backbone": f"{family.__module__}.{family.__qualname__}"}
    return plain


def _differences(key: str, saved: Any, current: Any) -> list[str]:
    if key in _IGNORED:
        return []
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for name in sorted(set(saved) | set(current)):
            found += _differences(f"{key}.{name}", saved.get(name), current.get(name))
        return found
    if saved != current:
        return [f"{key}: checkpoint {saved!r}, config {current!r}"]
    return []


def _schedule_length(record: dict[str, Any]) -> Any:
    scheduler = record.get("scheduler")
    return scheduler.get("max_epochs") if isinstance(scheduler, dict) else None


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _saved_checkpoint_dir(checkpoint: dict[str, Any]) -> str | None:
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith(("ModelCheckpoint", "RunCheckpoint")) and isinstance(state, dict):
            return state.get("dirpath")
    return None
