"""What every command-line tool shares: the one path from a user's mistake to one line on stderr and exit
status 2, and the checks of a command line that run before Hydra writes anything and before torch loads."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import hydra
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, ListConfig, OmegaConf

from transfer_lightning.utils.config_folder import config_folder
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.progress import configure_progress

CONFIG_FOLDER = config_folder()
Result = TypeVar("Result")
# Hydra's flags that take a value (``--config-dir my_conf``)
_HYDRA_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--experimental-rerun")
# Hydra's flags that show something and run no job, so there is nothing to check
_HYDRA_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")
# set once this process has checked its command line: the run does not check the same config again
command_line_checked = False


def config_groups(*, _root_: DictConfig) -> str:
    """``--help``'s config groups, one line each with its options (``${tl.config_groups:}`` in
    ``conf/hydra/default.yaml``): the folders of ``conf/`` and of a user's ``--config-dir`` and their YAML files, as
    Hydra lists them, less what nobody chooses: Hydra's own group, the schemas (``config/schemas.py``, which the
    YAMLs extend) and a base that every other option of its group extends (``data/common.yaml``)."""
    runtime = _root_.hydra.runtime
    options: dict[str, dict[str, set[str]]] = {}  # group -> option -> the sibling options it extends
    for source in runtime.config_sources:
        folder = Path(source.path)
        if source.schema != "file" or not folder.is_dir():
            continue
        for path in folder.glob("*/*.yaml"):
            if path.parent.name != "hydra":
                defaults = _defaults_of(path)
                options.setdefault(path.parent.name, {})[path.stem] = {
                    item for item in defaults if isinstance(item, str)
                }
    lines = []
    for group, extends in sorted(options.items()):
        chosen = runtime.choices.get(group)
        bases = {name for name in extends if name != chosen and len(extends) > 2
                 and all(name in others for other, others in extends.items() if other != name)}  # fmt: skip
        lines.append(f"{group}: {', '.join(sorted(set(extends) - bases))}")
    return "\n".join(lines)


def _defaults_of(path: Path) -> list:
    """A config file's ``defaults`` list; none for a file that does not read as one (a user's broken YAML is
    Hydra's to report when it is used, not ``--help``'s)."""
    try:
        defaults = OmegaConf.load(path).get("defaults")
    except Exception:  # noqa: BLE001 - any unreadable file: listed, without the options it extends
        return []
    return list(defaults) if isinstance(defaults, (list, ListConfig)) else []


OmegaConf.register_new_resolver("tl.config_groups", config_groups, replace=True)


def freeze_imported_objects() -> None:
    """Keep everything alive now (the imported modules: torch, Lightning, Hydra, ~600,000 objects) out of the
    garbage collector's scans from here on (``gc.freeze``), once per process, after a command's imports and
    before its first job.

    A sweep's jobs leave cyclic garbage (Trainers, modules, configs) that Python collects now and then; each
    full collection also scanned all of those imported objects (about 0.5 s on 2 cores, inside whichever job
    it fell on); frozen, it scans only what the jobs made (about 0.08 s). Once only: a later freeze would
    keep the garbage of the jobs before it for good.
    """
    global _imports_frozen
    if not _imports_frozen:
        gc.freeze()
        _imports_frozen = True


_imports_frozen = False


def exit_on_user_error(task: Callable[..., Result], *arguments: Any) -> Result:
    """``task(*arguments)``; a ``UserError`` becomes ``Error: <sentence>`` on stderr and exit status 2.

    The one way every entry point reports a user's mistake (no traceback; ``HYDRA_FULL_ERROR=1`` does
    not change this: the sentence is the whole story).
    """
    try:
        return task(*arguments)
    except UserError as error:
        exit_with(error)


def exit_with(error: UserError) -> NoReturn:
    """``Error: <sentence>`` on stderr and exit status 2: how every entry point ends on a user's mistake."""
    print(f"Error: {error}", file=sys.stderr)
    sys.exit(2)


def check_once(cfg: DictConfig) -> None:
    """The schema check (``config/check.py``) of a config this process did not check from its command line:
    a sweep's job, a test's or the Python API's config. Also takes the config's ``trusted_classes``."""
    from transfer_lightning.config.trust import trust_also

    trust_also(cfg.get("trusted_classes") or [])
    if not command_line_checked:
        from transfer_lightning.config.check import check_config

        check_config(cfg)


def run_tool(task: Callable[[DictConfig], Result], cfg: DictConfig) -> Result:
    """A tool's Hydra entry point: progress lines as configured, then ``task(cfg)`` (see ``exit_on_user_error``)."""
    from transfer_lightning.utils.log_filters import install_log_filters  # torch and Lightning are loaded by now

    install_log_filters()  # evaluate, predict, export: the same filters as training
    configure_progress((cfg.get("trainer") or {}).get("enable_progress_bar"))
    return exit_on_user_error(task, cfg)


def tool_main(config_name: str, task: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """A tool's ``main()`` (``python -m transfer_lightning.<tool>``, its console script): the command line
    checked in its first second, then Hydra composes ``conf/<config_name>.yaml`` and runs ``task``."""

    def run(cfg: DictConfig) -> None:
        run_tool(task, cfg)

    composed = hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name=config_name)(run)

    def main() -> None:
        exit_on_user_error(check_command_line, sys.argv[1:], config_name)
        composed()

    main.__doc__ = f"python -m transfer_lightning.{config_name} (the console script transfer-lightning-{config_name})"
    return main


def require(cfg: DictConfig, key: str, example: str) -> Any:
    """``cfg[key]``, or a ``UserError`` showing the command with it set."""
    value = cfg.get(key)
    if value is None or value == "":
        raise UserError(f"{key} is required, e.g. {example}")
    return value


def check_command_line(argv: list[str], config_name: str = "config") -> None:
    """A command's checks before Hydra writes anything and before torch loads (its first second): the
    config each job of it would run is composed and checked against the schemas (``config/``), and
    a ``resume=<run folder>`` must fit that run."""
    global command_line_checked
    if not runs_a_job_of_this_config(argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from transfer_lightning.config.compose import compose_checked

    flags, overrides = split_flags(argv)
    overrides = with_config_dir(flags, overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:  # noqa: BLE001 - a malformed override: Hydra's sentence, first line
        raise UserError(f"cannot read the command line: {str(error).strip().splitlines()[0]}") from None
    from transfer_lightning.config.trust import trust_also

    for override in parsed:
        if override.key_or_group == "trusted_classes" and isinstance(override.value(), list):
            trust_also(override.value())
    known = top_level_settings(CONFIG_FOLDER) if config_name == "config" else None
    for override in parsed:
        key = override.key_or_group
        plus = override.is_add() or override.is_force_add()
        if known is not None and plus and "." not in key and "/" not in key and key not in known:
            refuse_unknown_top_level_key(key, override.value(), known)
    multirun = any(arg in ("-m", "--multirun") for arg in argv)
    if config_name == "config" and not multirun and any(o.key_or_group == "resume" for o in parsed):
        from transfer_lightning.run.resume import check_resume_command  # reads the run's checkpoint: torch

        check_resume_command(argv)
        command_line_checked = True
        return
    # a sweep's first job is checked whole; each other swept value is checked for its key and type (a
    # misspelt key or option stops the sweep now), and a value out of range fails that job alone, as it runs
    (base, _), *others = _job_override_lists(parsed, overrides)
    first = compose_checked(CONFIG_FOLDER, config_name, base)
    for cfg in (first, *(_with_setting(first, setting) or _composed(config_name, job) for job, setting in others)):
        if config_name == "config":
            check_checkpoint_exists(cfg)
    command_line_checked = not any(override.is_sweep_override() for override in parsed)


def checked_as_hydra_composes(argv: list[str]) -> bool:
    """Whether a training command line is one run that Hydra's own composition can check (``run_checked``):
    not a sweep (``-m``: each of its jobs is checked before the first starts), not ``resume=`` (checked against
    the run's checkpoint), not one of Hydra's flags that show something or name another config."""
    flags, overrides = split_flags(argv)
    resumes = any(item.lstrip("+~").split("=", 1)[0] == "resume" for item in overrides)
    return runs_a_job_of_this_config(argv) and not {"-m", "--multirun"} & set(flags) and not resumes


def run_checked(argv: list[str], hydra_main: Callable[[], None]) -> None:
    """One training run in one composition of its config: Hydra's. ``ConfigCheck`` checks what Hydra composed
    before Hydra writes anything; a command line Hydra cannot compose gets the sentence of ``check_command_line``
    (which composes it again: only when it is wrong). The separate composition of ``check_command_line`` cost
    every run about 0.2 s.

    Hydra's composition errors are raised to here (``HYDRA_FULL_ERROR``) until the job starts
    (``job_started``); from then on Hydra reports a failure as it always does."""
    global _job_started, _raising_composition_errors, command_line_checked
    _job_started, command_line_checked = False, False
    _raising_composition_errors = "HYDRA_FULL_ERROR" not in os.environ
    if _raising_composition_errors:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_main()
    except Exception:
        if _job_started:
            raise
        job_started()
        exit_on_user_error(check_command_line, argv)
        raise  # a failure the check cannot name: Hydra's own error, whole
    finally:
        job_started()
        command_line_checked = False  # the next command of this process (a test's, the bench's) is checked anew


def job_started() -> None:
    """The job begins (or Hydra stopped before it): Hydra reports its failures its own way again."""
    global _job_started, _raising_composition_errors
    _job_started = True
    if _raising_composition_errors:
        os.environ.pop("HYDRA_FULL_ERROR", None)
        _raising_composition_errors = False


_job_started = _raising_composition_errors = False


class ConfigCheck(HydraCallback):
    """Hydra callback: a training run's composed config checked against the schemas (``config/check.py``) and its
    ``ckpt_path``, before Hydra writes anything and before torch loads; one sentence and exit status 2 for the
    first mistake. A config this process checked from its command line is not checked again."""

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        if config_name == "config":
            exit_on_user_error(_check_composed_run, config)


def _check_composed_run(cfg: DictConfig) -> None:
    global command_line_checked
    check_once(cfg)
    check_checkpoint_exists(cfg)
    command_line_checked = True


def runs_a_job_of_this_config(argv: list[str]) -> bool:
    """Whether a command line runs a job on the command's own config, which its first-second checks compose:
    not with one of Hydra's flags that show something and run nothing (``--help``, ``--cfg job``, ``--info``),
    nor with another primary config (``--config-name``: Hydra composes it, and training checks it before any data)."""
    flags, _ = split_flags(argv)
    return not set(flags) & {*_HYDRA_INFO_FLAGS, "--config-path", "-cp", "--config-name", "-cn"}


def _composed(config_name: str, overrides: list[str]) -> DictConfig:
    from transfer_lightning.config.compose import compose_checked

    return compose_checked(CONFIG_FOLDER, config_name, overrides, values=False)


def _with_setting(cfg: DictConfig, setting: str) -> DictConfig | None:
    """A copy of ``cfg`` with one swept ``key=value`` set, its type checked by the schema: a sweep over a
    setting's values costs one composition, not one per value. None where it takes a composition of its own
    (a config group, a key ``cfg`` lacks, a list or mapping value, or a value its type refuses: composing
    names that mistake in its sentence)."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import Container

    override = OverridesParser.create().parse_overrides([setting])[0]
    key, value = override.key_or_group, override.value()
    absent = object()
    if override.is_delete() or isinstance(value, (list, dict)):
        return None
    current = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False)
    if current is absent or isinstance(current, Container):
        return None  # a key the config lacks, or a group (model=resnet50 swaps a whole node)
    job = copy.deepcopy(cfg)
    try:
        OmegaConf.update(job, key, value, merge=False)
    except Exception:  # noqa: BLE001 - a value of the wrong type: the composition's sentence names it
        return None
    return job


def with_config_dir(flags: dict[str, str], overrides: list[str]) -> list[str]:
    """``overrides`` plus ``hydra.searchpath=[file://<folder>]`` for ``--config-dir <folder>`` (unless a search
    path is typed): the user's own presets found before Hydra starts, as Hydra will find them."""
    if "--config-dir" not in flags and "-cd" not in flags:
        return overrides
    folder = Path(flags.get("--config-dir") or flags["-cd"]).expanduser().absolute()
    if searchpath_overrides(overrides):
        return overrides
    return [*overrides, f"hydra.searchpath=[file://{folder}]"]


def searchpath_overrides(overrides: list[str]) -> list[str]:
    """The ``hydra.searchpath=[...]`` overrides among ``overrides`` (the user's config folders)."""
    return [item for item in overrides if item.split("=", 1)[0].lstrip("+") == "hydra.searchpath"]


def split_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Hydra's flags (``--config-dir my_conf`` or ``--config-dir=my_conf``: flag -> value, ``-m`` -> "") and
    the overrides of a command line."""
    flags, overrides, args = {}, [], iter(argv)
    for arg in args:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        name, given, value = arg.partition("=")
        if not given and name in _HYDRA_VALUE_FLAGS:
            value = next(args, "")
        flags[name] = value
    return flags, overrides


def _job_override_lists(parsed: list[Any], overrides: list[str]) -> list[tuple[list[str], str | None]]:
    """The override list of one job per swept value (the other swept keys at their first value), so that a
    sweep's every value is checked once, each with the ``key=value`` setting that differs from the first
    job's (None for the first); a single run is one list."""
    sweeps = [(index, o) for index, o in enumerate(parsed) if o.is_sweep_override()]
    if not sweeps:
        return [(overrides, None)]
    firsts = {index: _setting(o, next(iter(o.sweep_string_iterator()))) for index, o in sweeps}
    base = [firsts.get(index, text) for index, text in enumerate(overrides)]
    jobs: list[tuple[list[str], str | None]] = [(base, None)]
    for index, override in sweeps:
        for value in list(override.sweep_string_iterator())[1:]:
            setting = _setting(override, value)
            jobs.append(([*base[:index], setting, *base[index + 1 :]], setting))
    return jobs


def _setting(override: Any, value: str) -> str:
    prefix = "++" if override.is_force_add() else "+" if override.is_add() else ""
    return f"{prefix}{override.key_or_group}={value}"


def check_checkpoint_exists(cfg: DictConfig) -> None:
    checkpoint = cfg.get("ckpt_path")
    if checkpoint and "paths" in cfg and not Path(checkpoint).expanduser().is_file():
        raise UserError(
            f"ckpt_path={checkpoint} does not exist; give the checkpoint of a run to continue "
            "(outputs/<date>/<time>/checkpoints/last.ckpt) or resume=<run folder>"
        )


def top_level_settings(config_dir: Path) -> set[str]:
    """The top-level keys a training config may hold: ``config.yaml``'s own keys and its config groups."""
    own = set(OmegaConf.load(config_dir / "config.yaml").keys()) - {"defaults"}
    groups = {folder.name for folder in config_dir.iterdir() if folder.is_dir() and not folder.name.startswith("__")}
    return own | groups - {"hydra"}  # (__pycache__: conf/ is also the package transfer_lightning.conf)


def refuse_unknown_top_level_key(key: str, value: Any, known: set[str]) -> None:
    """Raise the one sentence for ``+key=value`` at the top level, with the closest setting."""
    from transfer_lightning.config.check import top_level_key_sentence

    raise UserError(top_level_key_sentence(f"+{key}", value, sorted(known)))
