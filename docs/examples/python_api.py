"""Train, evaluate and predict from Python, without the command line.

Run it from a checkout: ``python docs/examples/python_api.py`` (a minute on a CPU, nothing is
downloaded; everything is written under ``outputs/python-api/``). ``tests/test_docs.py`` runs this
file as it is.
"""

from pathlib import Path

from hydra import compose, initialize_config_dir
from PIL import Image

import transfer_lightning.config  # noqa: F401 - registers the config schemas that the YAML files name
from transfer_lightning.evaluate import evaluate
from transfer_lightning.predict import predict
from transfer_lightning.train import train
from transfer_lightning.utils.config_folder import config_folder


def compose_config(command: str, overrides: list[str]):
    """The config of ``command`` (``config`` to train, ``evaluate``, ``predict``, ``export``) composed with
    ``overrides``, as the command line composes it."""
    with initialize_config_dir(config_dir=str(config_folder()), version_base="1.3"):
        return compose(command, overrides=overrides)


def make_photos(root: Path) -> Path:
    """A stand-in for your own images: ``root/<class>/*.png``, two classes of coloured rectangles."""
    for label, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            Image.new("RGB", (48, 40), tuple(channel + 3 * i for channel in colour)).save(root / label / f"{i}.png")
    return root


def main(folder: Path) -> None:
    photos = make_photos(folder / "photos")
    run = folder / "run"
    # Outside a command-line run Hydra sets no folders: name the run's and the data folder runs share.
    folders = [f"paths.root_dir={folder}", f"paths.output_dir={run}", f"paths.data_dir={folder / 'data'}"]

    # 1. Train: the overrides you would type on the command line.
    overrides = [
        "data=image_folder",
        f"data.root={photos}",
        "data.image_size=32",
        "model.weights=null",  # random init, nothing to download (the default, DEFAULT, is ImageNet's)
        "strategy=finetune",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
    ]
    summary = train(compose_config("config", [*overrides, *folders]))  # fit, test the best checkpoint
    print(f"best val accuracy {summary['best_val_acc']:.3f}, checkpoint {summary['best_ckpt']}")

    # 2. Evaluate the run's best checkpoint on its own validation images.
    evaluated = folder / "evaluate"
    report = evaluate(
        compose_config("evaluate", [f"ckpt_path={run}", "split=val", f"output_dir={evaluated}", *folders])
    )
    print(f"val accuracy {report['accuracy']:.3f}; reports in {evaluated}")

    # 3. Predict the class of every image in a folder.
    predicted = folder / "predict"
    rows = predict(
        compose_config("predict", [f"ckpt_path={run}", f"inputs={photos / 'red'}", f"output_dir={predicted}", *folders])
    )
    for row in rows[:3]:
        best_class, probability = row["top"][0]
        print(f"{row['path']}: {best_class} ({probability:.0%})")


if __name__ == "__main__":
    main(Path("outputs/python-api").absolute())
