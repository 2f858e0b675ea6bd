"""The docs say what the code does: their commands and their Python example run as written, the
configuration reference lists every setting of the schemas, and the README stays short with every
link resolving. (``make docs`` builds the site itself with ``--strict``.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import ROOT
from transfer_lightning.config.schemas import SCHEMAS, TOOL_SCHEMAS, TrainSchema

DOCS = ROOT / "docs"
# A fenced shell block right after this line is run by test_getting_started_commands_run_as_written.
RUNNABLE = "<!-- runnable -->"
README_MAX_LINES = 300


def runnable_commands(page: Path) -> list[str]:
    """The commands of the fenced shell blocks marked runnable: one per line, continuations joined,
    comment-only lines left out."""
    commands: list[str] = []
    lines = page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != RUNNABLE:
            continue
        fence = lines[index + 1]
        assert fence.startswith("```bash") or fence.startswith("```sh"), f"{page.name}:{index + 2}: {fence!r}"
        block = []
        for code in lines[index + 2 :]:
            if code.startswith("```"):
                break
            block.append(code)
        joined = "\n".join(block).replace("\\\n", " ")
        commands += [c for c in joined.splitlines() if c.strip() and not c.lstrip().startswith("#")]
    return commands


def test_getting_started_commands_run_as_written(tmp_path: Path) -> None:
    """Each runnable command of the page, in order, in one fresh working folder, as a user types it
    (``python`` is this environment's); ``photo.jpg`` is the image the page tells the user to bring."""
    commands = runnable_commands(DOCS / "getting-started.md")
    for entry_point in ("transfer_lightning ", "transfer_lightning.evaluate ", "transfer_lightning.predict "):
        assert any(f"python -m {entry_point}" in command for command in commands), entry_point
    Image.new("RGB", (40, 30), (200, 40, 40)).save(tmp_path / "photo.jpg")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        result = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, command
    summary = json.loads((tmp_path / "outputs" / "first" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    (predictions,) = (tmp_path / "outputs" / "predict").glob("*/*/predictions.csv")
    assert [row["path"] for row in csv.DictReader(predictions.open())] == ["photo.jpg"]


def test_python_api_example_trains_evaluates_and_predicts(tmp_path: Path) -> None:
    """The page includes the example file whole, and that file runs as it is."""
    example = DOCS / "examples" / "python_api.py"
    assert '--8<-- "docs/examples/python_api.py"' in (DOCS / "python-api.md").read_text()
    spec = importlib.util.spec_from_file_location("python_api_example", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    module.main(tmp_path)

    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["class_names"] == ["blue", "red"]
    report = json.loads((tmp_path / "evaluate" / "eval_report.json").read_text())
    assert report["accuracy"] == summary["test_acc"]  # no test folder: the run tested on val, as evaluate did
    rows = list(csv.DictReader((tmp_path / "predict" / "predictions.csv").open()))
    assert len(rows) == 12 and not any(row["error"] for row in rows)


def test_configuration_reference_lists_every_setting_of_the_schemas() -> None:
    """Every documented field of every schema appears with its doc: the page cannot drift from them."""
    reference = _config_reference_module().reference_markdown()
    schemas = [TrainSchema, *TOOL_SCHEMAS.values(), *(s for group in SCHEMAS.values() for s in group.values())]
    for schema in schemas:
        for name, doc in _documented(schema):
            row = re.search(rf"^\| `[\w.]*\b{re.escape(name)}` \|.*\| {re.escape(_escaped(doc))} \|$", reference, re.M)
            assert row, f"{schema.__name__}.{name} is missing from the configuration reference"
    for option in (ROOT / "conf" / "strategy").glob("*.yaml"):
        assert f"`strategy={option.stem}`" in reference


def test_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < README_MAX_LINES
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL: not ours to check offline
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else ROOT / "README.md"
        assert file.exists(), f"README links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(file), f"README links to {target}: no such heading"


def _config_reference_module():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented(schema: type) -> list[tuple[str, str]]:
    import dataclasses

    fields = []
    for field in dataclasses.fields(schema):
        if dataclasses.is_dataclass(field.type):
            fields += _documented(field.type)
        elif "doc" in field.metadata:
            fields.append((field.name, field.metadata["doc"]))
    return fields


def _escaped(text: str) -> str:
    return _config_reference_module()._cell(text)


def _anchors(markdown: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
