"""A grid of test images with predicted and true labels (mistakes first) as a TensorBoard image."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transfer_lightning.analysis.examples import ExampleSelector
from transfer_lightning.analysis.figures import prediction_grid_figure
from transfer_lightning.callbacks.figure_logging import has_figure_logger, log_image, tested_split, tested_weights
from transfer_lightning.data.contract import preprocessor_for


class PredictionGridImage(Callback):
    """Keeps ``size`` test examples (misclassified first, most confident first; then the most
    confident correct one of each class) from the batches ``test_step`` saw and logs them as
    ``test/predictions`` when the test ends, titled with the checkpoint tested.

    Images are un-normalised with the model's own preprocessing contract (mean/std), so they show
    what the model saw. Under DDP the grid holds rank 0's examples.
    """

    def __init__(self, size: int = 32) -> None:
        self.selector = ExampleSelector(size)
        self.tested = ""  # the split and checkpoint the test runs on, named in the grid's title

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.selector.reset()
        self.tested = f"{tested_split(trainer)}, {tested_weights(trainer)}" if has_figure_logger(trainer) else ""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not (isinstance(outputs, dict) and "logits" in outputs and has_figure_logger(trainer)):
            return
        images = batch[0]
        if images.dim() != 4 or images.shape[1] != 3:  # cached features: the images they came from, by index
            images = _source_indices(trainer, batch_idx, len(images))
        if images is not None:
            self.selector.update(images, outputs["logits"], outputs["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = self.selector.examples()
        if not len(examples) or not has_figure_logger(trainer):
            return
        if examples.images.dim() == 1:  # cached features: only the kept examples' images are read
            examples.images = _source_images(trainer, examples.images, pl_module.device)
        examples.images = preprocessor_for(pl_module.record.preprocessing).unnormalize(examples.images)
        picture = prediction_grid_figure(examples, pl_module.class_names, self.tested)
        log_image(trainer, "test/predictions", picture.array())
        self.selector.reset()


def _source_indices(trainer: L.Trainer, batch_idx: int, count: int) -> torch.Tensor | None:
    """The test split's indices of batch ``batch_idx`` when the batches are cached features (None otherwise).

    The feature-cache datamodule (``transfer_lightning.cache``) keeps the image datamodule as
    ``source``; its test loader is not shuffled, so batch ``i`` holds items ``i * batch_size ...``.
    The images themselves are read for the examples the grid keeps alone (``_source_images``): reading
    and resizing every test image for a grid of 32 cost a cache-hit job ~1 s per 1,000 test images.
    """
    source = getattr(trainer.datamodule, "source", None)
    if source is None or getattr(source, "splits", None) is None:
        return None
    start = batch_idx * source.batch_size
    return torch.arange(start, start + count)


def _source_images(trainer: L.Trainer, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The preprocessed test images at ``indices`` of the feature-cache datamodule's ``source``."""
    source = trainer.datamodule.source
    images = torch.stack([source.splits.test[int(index)][0] for index in indices]).to(device)
    return source.preprocessor.to(device)(images, train=False)
