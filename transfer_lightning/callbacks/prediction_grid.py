"""A grid of test images with predicted and true labels (mistakes first) as a TensorBoard image."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback

from transfer_lightning.callbacks.figure_logging import has_figure_logger, log_figure
from transfer_lightning.data.contract import preprocessor_for
from transfer_lightning.evaluation.examples import ExampleSelector
from transfer_lightning.evaluation.figures import prediction_grid_figure


class PredictionGridImage(Callback):
    """Keeps ``size`` test examples (misclassified first, most confident first) from the batches
    ``test_step`` saw and logs them as ``test/predictions`` when the test ends.

    Images are un-normalised with the model's own preprocessing contract (mean/std), so they show
    what the model saw. Under DDP the grid holds rank 0's examples.
    """

    def __init__(self, size: int = 32) -> None:
        self.selector = ExampleSelector(size)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.selector.reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, dict) and "logits" in outputs and has_figure_logger(trainer):
            self.selector.update(batch[0], outputs["logits"], outputs["target"])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples = self.selector.examples()
        if not len(examples) or not has_figure_logger(trainer):
            return
        examples.images = preprocessor_for(pl_module.hparams["preprocessing"]).unnormalize(examples.images)
        log_figure(trainer, "test/predictions", prediction_grid_figure(examples, pl_module.class_names))
        self.selector.reset()
