"""The typed schema of every config node: one dataclass per option of a config group.

Each YAML of ``conf/<group>/`` names its schema first in its defaults
(``- /schema/<group>/<name>@_here_``), so composing the config checks every key's type and
refuses keys the schema does not have; ``config/check.py`` then checks the allowed values
(``config/settings.py``). A setting is documented here once, by its ``doc``: the docs' config
reference is generated from these classes. The schemas are also the allowlist of what may be
built from a file someone else wrote (``config/trust.py``): a recorded ``_target_`` must be the
``_target_`` of one of them.

Adding an option: a field here (type, default, allowed values, doc) and the code that reads it.
Nothing here imports torch.
"""

# OmegaConf reads these annotations at runtime: no ``from __future__ import annotations`` here.
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from transfer_lightning.config.settings import Either, Integer, ListOf, Mapping, OneOf, Range, Text, setting

ALL_STAGES, ALL_BUT_LAST = "all", "all_but_last"
INTERPOLATIONS = ("bilinear", "bicubic")
# data.augment: recipes/augment.py (kornia, every image its own draw); aug_transforms is fastai's
AUGMENTATIONS = ("none", "standard", "trivial", "randaugment", "augmix", "aug_transforms")
TRAIN_CROPS = ("pad", "random_resized")
RANDAUGMENT_OPS = 15  # kornia's RandAugment policy
TTA_MODES = ("none", "flip")
PRECISIONS = ("auto", "64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MAX_IMAGE_SIZE = 4096  # far above any backbone's input; bounds what a recorded contract may ask to allocate

BATCHES = Either(Integer(0), Range(0, 1), text="a batch count >= 0 or a fraction in [0, 1]")
MEAN = ListOf(Range(0), length=3, text="three numbers [R, G, B]")
STD = ListOf(Range(0, open_low=True), length=3, text="three numbers [R, G, B] > 0")
FOLDER = Text("a folder path")
TRUSTED = (
    "class paths a file you load (a run folder's config, a checkpoint's record) may name besides the project's own: "
    "your own callback or data module, e.g. trusted_classes=[mypkg.MyCallback]"
)


# -- model -------------------------------------------------------------------------------------
@dataclass
class ModelSchema:
    backbone: str = setting("", Text("a Backbone class path (set by model=<name>)"), doc="the backbone family class")
    name: str = setting("resnet18", Text("a model name, e.g. resnet18 (model=<name>)"), doc="the architecture")
    weights: str | None = setting(
        "DEFAULT",
        doc="DEFAULT or a torchvision weights name, pretrained (timm), a .pth/.safetensors state dict, "
        "a run of this framework (its folder or a .ckpt), or null for random init",
    )
    head_init: str | None = setting(
        None,
        Text("a head file written by python -m transfer_lightning.select (probes/<candidate>.head.pt)"),
        optional=True,
        doc="start the new head from this linear probe (LP-FT: written by select's probe stage); null = random",
    )


# -- strategy ----------------------------------------------------------------------------------
@dataclass
class FreezeStagesSchema:
    _target_: str = "transfer_lightning.strategies.FreezeStages"
    frozen_stages: Any = setting(
        0,
        Either(
            Integer(0),
            OneOf(ALL_STAGES, ALL_BUT_LAST),
            text=f"an integer 0..N (the backbone's stage count), {ALL_STAGES} or {ALL_BUT_LAST}",
        ),  # fmt: skip
        doc="stages frozen from the input: 0 = none ... N; all = only the head trains, all_but_last = the last "
        "stage and the head train",
    )
    train_bn: bool = setting(False, doc="BatchNorm layers of frozen stages train (affine and running statistics)")
    lr_decay: float | None = setting(
        None,
        Range(0, 1, open_low=True),
        optional=True,
        doc="discriminative learning rates: each stage below the head gets lr_decay times the one above "
        "(layer4 lr*d, layer3 lr*d^2 ...); null = every group at optimizer.lr",
    )
    lr_decay_unit: str = setting(
        "stage", OneOf("stage", "block"), doc="what lr_decay steps over: stage, or block (the ViT recipe)"
    )
    unfrozen_bn: str = setting(
        "train",
        OneOf("train", "eval"),
        doc="BatchNorm of the stages that train: train, or eval (keep the pretrained statistics; small batches)",
    )


@dataclass
class LinearProbeFinetuneSchema(FreezeStagesSchema):
    _target_: str = "transfer_lightning.strategies.LinearProbeFinetune"
    probe_max_iter: int = setting(
        500, Integer(0), doc="L-BFGS iterations of the head on the frozen (cached) features, at most; 0 = no probe"
    )
    probe_weight_decay: float = setting(1e-4, Range(0), doc="L2 penalty of the probe (logistic regression)")
    finetune_lr_scale: float = setting(
        0.1, Range(0, 1, open_low=True), doc="after the probe every group trains at optimizer.lr x this"
    )


@dataclass
class GradualUnfreezeSchema:
    _target_: str = "transfer_lightning.strategies.GradualUnfreeze"
    head_epochs: int = setting(1, Integer(0), doc="epochs the head trains alone")
    unfreeze_every: int = setting(
        1, Integer(0, text="an integer >= 0 (0 = all at once)"), doc="epochs between two unfreezes; 0 = all at once"
    )
    milestones: list[int] | None = setting(
        None,
        ListOf(Integer(0), sorted_=True, text="a non-decreasing list of epochs >= 0 (one per stage)"),
        optional=True,
        doc="first epoch of each stage from the top down; replaces head_epochs/unfreeze_every",
    )
    min_frozen_stages: int = setting(
        0,
        Integer(0, text="an integer in 0..N-1 (N: the backbone's stages)"),
        doc="stages (from the input) that never train",
    )
    unfreeze_warmup_epochs: int = setting(0, Integer(0), doc="epochs over which an unfrozen stage's rate ramps in")
    lr_decay: float | None = setting(
        0.5, Range(0, 1, open_low=True), optional=True, doc="discriminative learning rates (see FreezeStages)"
    )
    lr_decay_unit: str = setting("stage", OneOf("stage", "block"), doc="what lr_decay steps over")
    train_bn: bool = setting(False, doc="BatchNorm of stages not training (yet) keeps training")
    unfrozen_bn: str = setting("train", OneOf("train", "eval"), doc="BatchNorm of the stages that train")


# -- optimizer (partial: the module completes it with its parameter groups) ------------------------
LR = Range(0, open_low=True)
WEIGHT_DECAY = Range(0)


@dataclass
class AdamSchema:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = setting(1e-3, LR, doc="the head's learning rate (other groups follow strategy.lr_decay)")
    weight_decay: float = setting(0.0, WEIGHT_DECAY, doc="L2 penalty")
    betas: list[float] = setting([0.9, 0.999], ListOf(Range(0, 1, open_high=True), length=2), doc="Adam's betas")
    eps: float = setting(1e-8, Range(0, open_low=True), doc="Adam's epsilon")
    amsgrad: bool = setting(False, doc="the AMSGrad variant")


@dataclass
class AdamWSchema(AdamSchema):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = setting(1e-2, WEIGHT_DECAY, doc="decoupled weight decay")


@dataclass
class SGDSchema:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = setting(1e-3, LR, doc="the head's learning rate (other groups follow strategy.lr_decay)")
    momentum: float = setting(0.9, Range(0, 1, open_high=True), doc="momentum")
    weight_decay: float = setting(0.0, WEIGHT_DECAY, doc="L2 penalty")
    nesterov: bool = setting(False, doc="Nesterov momentum")
    dampening: float = setting(0.0, Range(0, 1), doc="dampening for momentum")


# -- scheduler ---------------------------------------------------------------------------------
@dataclass
class CosineSchema:
    _target_: str = "transfer_lightning.optim.schedulers.cosine_with_warmup"
    _partial_: bool = True
    max_epochs: int = setting(
        5, Integer(1, text="an integer >= 1 (set trainer.max_epochs)"), doc="the schedule's length"
    )
    warmup_epochs: int = setting(0, Integer(0), doc="linear warm-up epochs")
    warmup_steps: int = setting(
        0, Integer(0), doc="linear warm-up in optimizer steps instead (then the whole schedule steps per batch)"
    )
    min_lr_ratio: float = setting(0.0, Range(0, 1), doc="the last epoch's rate as a fraction of the first")


@dataclass
class OneCycleSchema:
    _target_: str = "transfer_lightning.optim.schedulers.one_cycle"
    _partial_: bool = True
    max_epochs: int = setting(
        5, Integer(1, text="an integer >= 1 (set trainer.max_epochs)"), doc="the cycle's length (the whole run)"
    )
    pct_start: float = setting(
        0.3, Range(0, 1, open_low=True, open_high=True), doc="the rising part, as a fraction of the run"
    )
    warmup_epochs: int | None = setting(
        None, Integer(1), optional=True, doc="the rising part in epochs instead of pct_start"
    )
    warmup_steps: int | None = setting(
        None, Integer(1), optional=True, doc="the rising part in optimizer steps instead of pct_start"
    )
    div_factor: float = setting(5.0, Range(1), doc="the first rate is optimizer.lr / div_factor")
    final_div_factor: float = setting(1e5, Range(1), doc="the last rate is the first / final_div_factor")
    anneal_strategy: str = setting("cos", OneOf("cos", "linear"), doc="the shape of both parts")
    cycle_momentum: bool = setting(True, doc="momentum (Adam's beta1) falls while the rate rises, and back")
    base_momentum: float = setting(0.85, Range(0, 1), doc="the momentum at the peak rate")
    max_momentum: float = setting(0.95, Range(0, 1), doc="the momentum at the start and the end")


@dataclass
class StepSchema:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    step_size: int = setting(2, Integer(1), doc="epochs between two decays")
    gamma: float = setting(0.1, Range(0, 1, open_low=True), doc="the factor of each decay")


# -- data --------------------------------------------------------------------------------------
@dataclass
class DataSchema:
    """The keys every data module takes (data/base.py)."""

    image_size: int | None = setting(
        None,
        Integer(32, MAX_IMAGE_SIZE, text="an integer >= 32"),
        optional=True,
        doc="the side the network sees; null = the weights' own (preprocessing contract)",
    )
    resize_size: int | None = setting(
        None,
        Integer(32, MAX_IMAGE_SIZE, text="an integer >= data.image_size"),
        optional=True,
        doc="the shorter side before the centre crop; null = the weights' ratio to image_size",
    )
    interpolation: str | None = setting(
        None, OneOf(*INTERPOLATIONS), optional=True, doc="resize interpolation; null = the weights'"
    )
    mean: list[float] | None = setting(None, MEAN, optional=True, doc="per-channel mean; null = the weights'")
    std: list[float] | None = setting(None, STD, optional=True, doc="per-channel std; null = the weights'")
    augment: str = setting(
        "none",
        OneOf(*AUGMENTATIONS),
        doc="training augmentation, every image its own draw: standard (crop + flip), trivial (+ TrivialAugment), "
        "randaugment (+ RandAugment), augmix (+ AugMix), aug_transforms (fastai's: flip, rotate, zoom, warp, lighting)",
    )
    train_crop: str = setting(
        "pad", OneOf(*TRAIN_CROPS), doc="the augmented crop: pad (padded random crop) | random_resized"
    )
    crop_scale: list[float] = setting(
        [0.08, 1.0],
        ListOf(Range(0, 1, open_low=True), length=2, sorted_=True, text="[low, high] fractions of the image in (0, 1]"),
        doc="area range of the random resized crop (train_crop=random_resized)",
    )
    color_jitter: float = setting(0.0, Range(0, 1, open_high=True), doc="colour jitter strength with augment")
    randaugment_ops: int = setting(
        2, Integer(1, RANDAUGMENT_OPS), doc="RandAugment's operations per image (augment=randaugment)"
    )
    randaugment_magnitude: int = setting(
        9, Integer(1, 29), doc="RandAugment's magnitude of 30 (torchvision's scale; timm's m9 of 10 is 27)"
    )
    augmix_severity: int = setting(3, Integer(1, 9), doc="AugMix's operation strength (augment=augmix)")
    augmix_width: int = setting(3, Integer(1, 10), doc="AugMix's chains mixed per image")
    aug_transforms_mult: float = setting(
        1.0, Range(0, open_low=True), doc="fastai's mult: scales rotation, warp and lighting (augment=aug_transforms)"
    )
    mixup_alpha: float = setting(0.0, Range(0), doc="mixup's Beta(alpha, alpha); > 0 turns mixup on (timm's Mixup)")
    cutmix_alpha: float = setting(0.0, Range(0), doc="CutMix's Beta(alpha, alpha); > 0 turns CutMix on")
    mixup_prob: float = setting(1.0, Range(0, 1), doc="probability that a batch (or image) is mixed")
    mixup_switch_prob: float = setting(0.5, Range(0, 1), doc="probability of CutMix instead of mixup when both are on")
    mixup_mode: str = setting(
        "batch", OneOf("batch", "pair", "elem"), doc="one mixing weight per batch, per pair, or per image"
    )
    sampler: str = setting(
        "none", OneOf("none", "balanced"), doc="balanced: every class drawn equally often in training"
    )
    batch_size: int = setting(32, Integer(1), doc="images per batch and device")
    num_workers: Any = setting(
        "auto",
        Either(OneOf("auto"), Integer(0), text="auto or an integer >= 0"),
        doc="loader processes; auto = 0 for in-memory data, else min(8, cores - 1)",
    )
    test_each_epoch: bool = setting(False, doc="also evaluate the test set after every epoch (test_epoch/acc)")
    feature_cache: Any = setting(
        "auto",
        Either(OneOf("auto"), OneOf(False), text="auto | false"),
        doc="frozen-stage feature cache: auto = on where exact, false = off",
    )
    feature_cache_dir: str | None = setting(None, FOLDER, optional=True, doc="the feature cache's folder")
    feature_cache_max_gb: float = setting(4.0, Range(0, open_low=True, text="a number of GB > 0"), doc="memory budget")


@dataclass
class CIFAR10Schema(DataSchema):
    _target_: str = "transfer_lightning.data.CIFAR10DataModule"
    root: str = setting("data", Text("a folder path, e.g. data.root=~/photos"), doc="download folder or class folders")
    download: bool = setting(True, doc="download CIFAR-10 when it is not in root")
    val_size: int = setting(5000, Integer(1), doc="training images held out for validation (seeded)")
    split_seed: int = setting(42, Integer(), doc="the seed of the val split")
    on_bad_file: str = setting("skip", OneOf("skip", "error"), doc="broken files of a class-folder copy: skip | error")


@dataclass
class ImageFolderSchema(DataSchema):
    _target_: str = "transfer_lightning.data.ImageFolderDataModule"
    root: str | None = setting(None, Text("a folder path, e.g. data.root=~/photos"), doc="your class folders")
    val_fraction: float = setting(0.2, Range(0, 1, open_low=True, open_high=True, text="a fraction in (0, 1)"),
                                  doc="val carved out of train when there is no val folder")  # fmt: skip
    test_fraction: float | None = setting(
        None,
        Range(0, 1, open_low=True, open_high=True, text="a fraction in (0, 1)"),
        optional=True,
        doc="test carved out when there is no test folder; null = no test split (the final test uses val)",
    )
    split_seed: int = setting(42, Integer(), doc="the seed of the carved splits")
    on_bad_file: str = setting("skip", OneOf("skip", "error"), doc="broken files: skip (listed) | error (stop)")
    balance: str = setting("none", OneOf("none", "weighted_sampler"), doc="the earlier name of data.sampler=balanced")
    cache: str = setting("auto", OneOf("auto", "memory", "disk", "none"), doc="where decoded images are kept")
    cache_dir: str | None = setting(None, FOLDER, optional=True, doc="the disk cache's folder")


@dataclass
class SyntheticSchema(DataSchema):
    _target_: str = "transfer_lightning.data.SyntheticDataModule"
    num_classes: int = setting(4, Integer(2, 1000, text="an integer >= 2"), doc="classes (one colour each)")
    train_size: int = setting(64, Integer(1, 100_000, text="an integer >= 1"), doc="training images")
    val_size: int = setting(32, Integer(1, 100_000, text="an integer >= 1"), doc="validation images")
    test_size: int = setting(32, Integer(1, 100_000, text="an integer >= 1"), doc="test images")
    native_size: int = setting(32, Integer(1, 1024, text="an integer >= 1"), doc="the stored images' side")
    seed: int = setting(0, Integer(), doc="the images' seed")


# -- loss, EMA (recipes/) --------------------------------------------------------------------------
@dataclass
class LossSchema:
    """The training loss: cross-entropy, on hard labels or on mixup's soft targets (recipes/loss.py)."""

    label_smoothing: float = setting(
        0.0, Range(0, 1, open_high=True), doc="label smoothing (applied once, to mixup's targets too)"
    )
    class_weights: str = setting(
        "none", OneOf("none", "balanced"), doc="balanced: each class weighted by its inverse frequency in train"
    )


@dataclass
class EMASchema:
    """An exponential moving average of the weights (recipes/ema.py), validated, tested and saved."""

    enabled: bool = setting(False, doc="keep an EMA of the weights; checkpoints and exports hold it")
    decay: float = setting(0.9998, Range(0, 1, open_low=True, open_high=True), doc="the EMA's decay per step")
    warmup: bool = setting(False, doc="timm's warm-up: decay min(decay, (1 + n) / (10 + n)) at update n")


# -- trainer -----------------------------------------------------------------------------------
@dataclass
class TrainerSchema:
    """Every lightning.Trainer argument but callbacks, logger and plugins (built from their own groups)."""

    _target_: str = "lightning.pytorch.Trainer"
    accelerator: str = setting("auto", OneOf(*ACCELERATORS), doc="auto: a GPU when present, else the CPU")
    strategy: Any = setting("auto", doc="auto, ddp, ... (Lightning's strategies)")
    devices: Any = setting(
        "auto",
        Either(
            OneOf("auto"),
            Integer(1),
            OneOf(-1),
            Text("a device string"),
            ListOf(Integer(0)),
            text="auto, a count >= 1, -1 (all), or a list of device indices",
        ),  # fmt: skip
        doc="devices per node",
    )
    num_nodes: int = setting(1, Integer(1), doc="machines")
    precision: Any = setting(
        "auto", Either(OneOf(*PRECISIONS), OneOf(16, 32, 64), text=" | ".join(PRECISIONS)), doc="auto: bf16-mixed "
        "on a GPU that supports it, else 32-true"
    )  # fmt: skip
    fast_dev_run: Any = setting(False, Either(OneOf(True, False), Integer(0), text="true, false or a batch count"),
                                doc="one batch of each loop (a smoke test)")  # fmt: skip
    max_epochs: int | None = setting(
        5, Either(Integer(1), OneOf(-1), text="an integer >= 1 (or -1)"), optional=True, doc="epochs"
    )
    min_epochs: int | None = setting(None, Integer(0), optional=True, doc="at least this many epochs")
    max_steps: int = setting(-1, Integer(-1, text="an integer >= 1 (or -1: no limit)"), doc="optimizer steps")
    min_steps: int | None = setting(None, Integer(0), optional=True, doc="at least this many steps")
    max_time: Any = setting(
        None,
        Either(
            Text("DD:HH:MM:SS"),
            Mapping("a dict of days/hours/minutes"),
            OneOf(None),
            text="DD:HH:MM:SS, a dict of days/hours/minutes, or null",
        ),  # fmt: skip
        doc="stop after this long",
    )
    limit_train_batches: Any = setting(None, BATCHES, optional=True, doc="batches (or fraction) per training epoch")
    limit_val_batches: Any = setting(None, BATCHES, optional=True, doc="batches (or fraction) per validation")
    limit_test_batches: Any = setting(None, BATCHES, optional=True, doc="batches (or fraction) of the test")
    limit_predict_batches: Any = setting(None, BATCHES, optional=True, doc="batches (or fraction) of predict")
    overfit_batches: Any = setting(0.0, BATCHES, doc="train and validate on these batches only (a debug aid)")
    val_check_interval: Any = setting(
        None,
        Either(Integer(1), Range(0, 1, open_low=True), text="a batch count >= 1, a fraction of the epoch in (0, 1]"),
        optional=True,
        doc="validate within an epoch",
    )
    check_val_every_n_epoch: int | None = setting(1, Integer(1), optional=True, doc="validate every n epochs")
    num_sanity_val_steps: int | None = setting(
        None, Integer(-1, text="an integer >= 0 (-1: all)"), optional=True, doc="validation batches before training"
    )
    log_every_n_steps: int | None = setting(10, Integer(1), optional=True, doc="logging interval in steps")
    enable_checkpointing: bool | None = setting(None, doc="checkpointing on (null: Lightning's default)")
    enable_progress_bar: bool | None = setting(None, doc="progress bar (null: on where a terminal shows it)")
    enable_model_summary: bool | None = setting(None, doc="the model summary table")
    accumulate_grad_batches: int = setting(1, Integer(1), doc="batches per optimizer step")
    gradient_clip_val: float | None = setting(None, Range(0), optional=True, doc="clip gradients at this value")
    gradient_clip_algorithm: str | None = setting(None, OneOf("norm", "value"), optional=True, doc="how to clip")
    deterministic: Any = setting(None, OneOf(True, False, "warn", None), doc="deterministic algorithms")
    benchmark: bool | None = setting(None, doc="cudnn.benchmark (null: on unless deterministic)")
    inference_mode: bool = setting(True, doc="torch.inference_mode in evaluation")
    use_distributed_sampler: bool = setting(True, doc="Lightning's distributed sampler under DDP")
    profiler: Any = setting(None, doc="simple | advanced | pytorch | null")
    detect_anomaly: bool = setting(False, doc="autograd anomaly detection")
    barebones: bool = setting(False, doc="Lightning's barebones mode")
    sync_batchnorm: bool = setting(False, doc="synchronise BatchNorm across processes (DDP)")
    reload_dataloaders_every_n_epochs: int = setting(0, Integer(0), doc="rebuild the loaders every n epochs")
    default_root_dir: str | None = setting(None, doc="Lightning's root folder (the run folder)")
    enable_autolog_hparams: bool = setting(True, doc="Lightning logs hyperparameters")


# -- callbacks ---------------------------------------------------------------------------------
@dataclass
class RunCheckpointSchema:
    _target_: str = "transfer_lightning.callbacks.RunCheckpoint"
    dirpath: str | None = setting(None, doc="the checkpoint folder (<run>/checkpoints)")
    filename: str | None = setting("best", doc="the best checkpoint's name")
    monitor: str | None = setting("val/acc", doc="the metric that picks the best checkpoint (null: the last epoch)")
    mode: str = setting("max", OneOf("min", "max"), doc="min | max")
    save_top_k: int = setting(1, Integer(-1, text="an integer >= 0 (-1: keep all)"), doc="best checkpoints kept")
    save_last: bool = setting(True, doc="also write last.ckpt (resume)")
    auto_insert_metric_name: bool = setting(False, doc="metric name in the file name")
    every_n_train_steps: int | None = setting(None, Integer(1), optional=True, doc="also save every n steps")
    enable_version_counter: bool = setting(False, doc="-v1 suffixes")


@dataclass
class CheckpointCadenceSchema:
    every_n_steps: int | None = setting(
        None, Integer(1), optional=True, doc="write last.ckpt every n training steps too (long epochs)"
    )


@dataclass
class EarlyStoppingSchema:
    _target_: str = "lightning.pytorch.callbacks.EarlyStopping"
    monitor: str = setting("val/acc", doc="the metric watched")
    mode: str = setting("max", OneOf("min", "max"), doc="min | max")
    patience: int = setting(3, Integer(0), doc="epochs without improvement before stopping")
    min_delta: float = setting(0.0, Range(0), doc="the least change that counts as improvement")


@dataclass
class LearningRateMonitorSchema:
    _target_: str = "lightning.pytorch.callbacks.LearningRateMonitor"
    logging_interval: str | None = setting("epoch", OneOf("epoch", "step"), optional=True, doc="epoch | step")


STAGES = ListOf(OneOf("val", "test"), text="a list of val / test")


@dataclass
class PerClassAccuracySchema:
    _target_: str = "transfer_lightning.callbacks.PerClassAccuracy"
    stages: list[str] = setting(["val", "test"], STAGES, doc="where per-class accuracy is logged")


@dataclass
class ConfusionMatrixSchema:
    _target_: str = "transfer_lightning.callbacks.ConfusionMatrixImage"
    stages: list[str] = setting(["val", "test"], STAGES, doc="where the confusion matrix is drawn")


@dataclass
class PredictionGridSchema:
    _target_: str = "transfer_lightning.callbacks.PredictionGridImage"
    size: int = setting(32, Integer(1), doc="images in the grid (misclassified first)")


@dataclass
class DeviceReportSchema:
    _target_: str = "transfer_lightning.callbacks.DeviceReport"


@dataclass
class ImagesProgressBarSchema:
    _target_: str = "transfer_lightning.callbacks.ImagesProgressBar"


@dataclass
class RichProgressBarSchema:
    """Lightning's own bar: what run folders written before ``ImagesProgressBar`` name (they still resume)."""

    _target_: str = "lightning.pytorch.callbacks.RichProgressBar"


# -- logger, paths -----------------------------------------------------------------------------
@dataclass
class TensorBoardSchema:
    _target_: str = "lightning.pytorch.loggers.TensorBoardLogger"
    save_dir: str = setting("", doc="the run folder")
    name: str = setting("tensorboard", Text("a folder name"), doc="the events' folder in the run folder")
    version: str = setting("", doc="empty: no version subfolder")
    default_hp_metric: bool = setting(False, doc="Lightning's placeholder hp_metric")
    sub_dir: str | None = setting(None, doc="a sweep job's label (set by the sweep)")


@dataclass
class EpochCSVSchema:
    _target_: str = "transfer_lightning.loggers.epoch_csv.EpochCSVLogger"
    save_dir: str = setting("", doc="the run folder")
    name: str = setting("csv", Text("a folder name"), doc="metrics.csv's folder in the run folder")
    version: str = setting("", doc="empty: no version subfolder")


LOG_MODEL = OneOf(True, False, "all")


@dataclass
class MLflowSchema:
    _target_: str = "lightning.pytorch.loggers.MLFlowLogger"
    tracking_uri: str | None = setting(
        None,
        Text("a tracking URI (http://127.0.0.1:5000, sqlite:///outputs/mlflow.db)"),
        optional=True,
        doc="the tracking server; null: MLFLOW_TRACKING_URI, else a local store outputs/mlflow.db",
    )
    experiment_name: str = setting("transfer_lightning", Text("an experiment name"), doc="the MLflow experiment")
    run_name: str | None = setting(None, optional=True, doc="null: named like the run folder")
    log_model: Any = setting(
        False, LOG_MODEL, doc="true: the best and last checkpoints and the export as artifacts; all: every checkpoint"
    )
    tags: dict[str, str] | None = setting(None, optional=True, doc="extra tags of every run")
    artifact_location: str | None = setting(
        None, optional=True, doc="a new experiment's artifacts; null: the server's choice (a local store: beside it)"
    )
    run_id: str | None = setting(None, optional=True, doc="null: a new run, or the run folder's own when resumed")


@dataclass
class WandbSchema:
    _target_: str = "lightning.pytorch.loggers.WandbLogger"
    project: str = setting("transfer_lightning", Text("a W&B project name"), doc="the W&B project")
    entity: str | None = setting(None, optional=True, doc="the W&B team or user; null: the account's default")
    name: str | None = setting(None, optional=True, doc="null: named like the run folder")
    save_dir: str = setting("", doc="the run folder (W&B writes wandb/ in it)")
    offline: bool = setting(False, doc="keep everything on this machine (as WANDB_MODE=offline)")
    log_model: Any = setting(False, LOG_MODEL, doc="checkpoints as W&B artifacts (not with offline=true)")
    group: str | None = setting(None, optional=True, doc="null: a sweep's jobs are grouped by the sweep folder")
    id: str | None = setting(None, optional=True, doc="null: a new run, or the run folder's own when resumed")


@dataclass
class PathsSchema:
    root_dir: str = setting("", Text("a folder path"), doc="where the command runs")
    data_dir: str = setting("", Text("a folder path"), doc="downloads and caches shared by runs (not in a run)")
    output_dir: str = setting("", doc="this run's folder")


# -- the training command's top level ------------------------------------------------------------
LR_FIND_MIN_STEPS = 20  # tune.num_training's floor: Lightning's suggestion skips the first 10 steps


@dataclass
class TuneSchema:
    lr_find: bool = setting(False, doc="run the learning-rate finder before fit")
    apply: bool = setting(True, doc="set optimizer.lr to the suggestion (false: only plot it)")
    min_lr: float = setting(1e-6, Range(0, open_low=True), doc="the sweep's first rate")
    max_lr: float = setting(1.0, Range(0, open_low=True, text="a number > 0 (above tune.min_lr)"), doc="its last")
    num_training: int = setting(
        100,
        Integer(LR_FIND_MIN_STEPS, text=f"an integer >= {LR_FIND_MIN_STEPS} (the suggestion skips the first 10 steps)"),
        doc="steps of the sweep",
    )


@dataclass
class TrainSchema:
    """``python -m transfer_lightning``: the groups are composed into the fields typed ``Any``."""

    data: Any = None
    model: Any = None
    strategy: Any = None
    optimizer: Any = None
    scheduler: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    paths: Any = None
    seed: int = setting(42, Integer(), doc="seeds Python, NumPy, torch and the loader workers")
    ckpt_path: str | None = setting(
        None, Text("a path to a .ckpt file", ends_with=".ckpt"), optional=True, doc="continue from this checkpoint"
    )
    test: bool = setting(True, doc="test the best checkpoint and write run_summary.json")
    resume: Any = setting(
        None,
        Either(
            Text("a run folder"),
            OneOf(True, False, None),
            text="a run folder (outputs/<date>/<time>), true for a sweep, or null",
        ),  # fmt: skip
        doc="continue a killed run (its folder) or sweep (true)",
    )
    tune: TuneSchema = setting(TuneSchema(), doc="the learning-rate finder")
    loss: Any = None
    ema: EMASchema = setting(EMASchema(), doc="an exponential moving average of the weights")
    compile: bool = setting(False, doc="torch.compile the network")
    trusted_classes: list[str] = setting([], ListOf(Text("a class path")), doc=TRUSTED)


# -- the preprocessing contract a checkpoint records (data/contract.py) -------------------------------
@dataclass
class PreprocessingSchema:
    image_size: int = setting(224, Integer(1, MAX_IMAGE_SIZE), doc="the side the network sees")
    resize_size: int = setting(256, Integer(1, MAX_IMAGE_SIZE), doc="the shorter side before the centre crop")
    interpolation: str = setting("bilinear", OneOf(*INTERPOLATIONS), doc="resize interpolation")
    mean: list[float] = setting([0.485, 0.456, 0.406], MEAN, doc="per-channel mean")
    std: list[float] = setting([0.229, 0.224, 0.225], STD, doc="per-channel std")
    crop_size: int | None = setting(None, Integer(1, MAX_IMAGE_SIZE), optional=True, doc="the stored crop")


# -- the tools' top levels -------------------------------------------------------------------------
CHECKPOINT = Text("a path to a .ckpt file or a run folder")


@dataclass
class EvaluateSchema:
    """``python -m transfer_lightning.evaluate``."""

    data: Any = None
    trainer: Any = None
    paths: Any = None
    ckpt_path: str | None = setting(None, CHECKPOINT, optional=True, doc="the checkpoint (or run folder) to evaluate")
    split: str = setting("test", OneOf("test", "val"), doc="the split of the checkpoint's data")
    output_dir: str | None = setting(None, FOLDER, optional=True, doc="where the reports go")
    grid_size: int = setting(32, Integer(1), doc="images in the prediction grid")
    top_confused: int = setting(5, Integer(0), doc="(true, predicted) pairs the report lists")
    trusted_classes: list[str] = setting([], ListOf(Text("a class path")), doc=TRUSTED)
    tta: str = setting("none", OneOf(*TTA_MODES), doc="flip: the mean of the image's and its mirror's logits")


@dataclass
class PredictSchema:
    """``python -m transfer_lightning.predict``."""

    trainer: Any = None
    paths: Any = None
    ckpt_path: str | None = setting(None, CHECKPOINT, optional=True, doc="the checkpoint (or run folder)")
    inputs: Any = setting(None, doc="an image file, a folder of images, or a list of them")
    top_k: int = setting(5, Integer(1), doc="classes listed per image (at most the checkpoint's classes)")
    batch_size: int = setting(64, Integer(1), doc="images per batch")
    num_workers: Any = setting("auto", Either(OneOf("auto"), Integer(0), text="auto or an integer >= 0"),
                               doc="loader processes")  # fmt: skip
    show: int = setting(50, Integer(0), doc="rows printed on screen (the CSV has all)")
    tta: str = setting("none", OneOf(*TTA_MODES), doc="flip: the mean of the image's and its mirror's logits")
    output_dir: str | None = setting(None, FOLDER, optional=True, doc="where predictions.csv goes")
    trusted_classes: list[str] = setting([], ListOf(Text("a class path")), doc=TRUSTED)


@dataclass
class ExportSchema:
    """``python -m transfer_lightning.export``."""

    paths: Any = None
    ckpt_path: str | None = setting(None, CHECKPOINT, optional=True, doc="the checkpoint (or run folder)")
    format: str = setting("onnx", OneOf("onnx", "torchscript", "state_dict"), doc="the exported file's format")
    output_dir: str | None = setting(None, FOLDER, optional=True, doc="where the files go (beside the checkpoint)")
    parity_batch_size: int = setting(8, Integer(1), doc="images in the parity check")
    parity_tolerance: float = setting(1e-3, Range(0, open_low=True), doc="largest allowed logit difference")
    trusted_classes: list[str] = setting([], ListOf(Text("a class path")), doc=TRUSTED)
    tta: str = setting(
        "none", OneOf(*TTA_MODES), doc="flip: the exported model averages the image's and its mirror's logits"
    )


DEFAULT_CANDIDATES = [
    "model=resnet18",
    "model=resnet50",
    "model=convnext_tiny",
    "model=efficientnet_b0",
    "model=mobilenet_v3_large",
    "model=regnet_y_1_6gf",
    "model=swin_t",
    "model=vit_b_16",
]


@dataclass
class ProbeSchema:
    """How every candidate's linear probe is fitted: the same for all, so their accuracies compare."""

    weight_decays: list[float] = setting(
        [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0],
        ListOf(Range(0, open_low=True), at_least=1, text="a list of numbers > 0"),
        doc="the L2 penalties tried (on standardised features, per image); the one with the best val accuracy wins",
    )
    max_iterations: int = setting(1000, Integer(1), doc="L-BFGS iterations per penalty at most")
    throughput_seconds: float = setting(
        3.0, Range(0, open_low=True), doc="how long each candidate's inference speed (images/s) is timed"
    )


@dataclass
class StatsSchema:
    """The bootstrap behind every confidence interval and the paired test (fixed seed: reproducible reports)."""

    bootstrap_samples: int = setting(2000, Integer(100), doc="bootstrap replicates per interval or test")
    seed: int = setting(0, Integer(), doc="the bootstrap's seed: the same run folders give the same report")


@dataclass
class SelectSchema:
    """``python -m transfer_lightning.select``: the data, trainer and paths groups are training's."""

    data: Any = None
    trainer: Any = None
    paths: Any = None
    candidates: list[str] = setting(
        DEFAULT_CANDIDATES,
        ListOf(Text("a string of overrides"), at_least=1, text="a list of strings of overrides, e.g. "
               "['model=resnet18','model=timm model.name=convnext_nano']"),
        doc="one string of training overrides per candidate (a model and its weights; any setting it needs)",
    )  # fmt: skip
    top_k: int = setting(2, Integer(0), doc="the best probes fine-tuned; 0 = probe only")
    seeds: int = setting(3, Integer(1, 100), doc="fine-tuning runs per candidate, with seed=1..seeds")
    finetune_overrides: str = setting(
        "strategy=full optimizer=adamw optimizer.lr=1e-4 scheduler=cosine",
        doc="training overrides of every fine-tune, after the candidate's (strategy=, optimizer.lr=, trainer.max_epochs= ...)",
    )
    probe: ProbeSchema = setting(ProbeSchema(), doc="the linear probe")
    stats: StatsSchema = setting(StatsSchema(), doc="the confidence intervals and the paired test")
    resume: str | None = setting(
        None, Text("a select folder (outputs/select/<date>/<time>)"), optional=True, doc="continue a killed select"
    )
    trusted_classes: list[str] = setting([], ListOf(Text("a class path")), doc=TRUSTED)


SCHEMAS: dict[str, dict[str, type]] = {
    "model": {"model": ModelSchema},
    "strategy": {
        "freeze_stages": FreezeStagesSchema,
        "gradual": GradualUnfreezeSchema,
        "lp_ft": LinearProbeFinetuneSchema,
    },
    "optimizer": {"adam": AdamSchema, "adamw": AdamWSchema, "sgd": SGDSchema},
    "scheduler": {"cosine": CosineSchema, "step": StepSchema, "onecycle": OneCycleSchema},
    "loss": {"cross_entropy": LossSchema},
    "data": {"cifar10": CIFAR10Schema, "image_folder": ImageFolderSchema, "synthetic": SyntheticSchema},
    "trainer": {"trainer": TrainerSchema},
    "callbacks": {
        "model_checkpoint": RunCheckpointSchema,
        "checkpoint": CheckpointCadenceSchema,
        "early_stopping": EarlyStoppingSchema,
        "lr_monitor": LearningRateMonitorSchema,
        "per_class_accuracy": PerClassAccuracySchema,
        "confusion_matrix": ConfusionMatrixSchema,
        "prediction_grid": PredictionGridSchema,
        "device_report": DeviceReportSchema,
        "progress_bar": ImagesProgressBarSchema,
        "rich_progress_bar": RichProgressBarSchema,
    },
    "logger": {"tensorboard": TensorBoardSchema, "csv": EpochCSVSchema, "mlflow": MLflowSchema, "wandb": WandbSchema},
    "paths": {"paths": PathsSchema},
}


def register_schemas() -> None:
    """Store every schema as ``schema/<group>/<name>`` (the YAMLs' first default), and each command's top
    level as ``<command>_schema``."""
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
    for name, schema in TOOL_SCHEMAS.items():
        store.store(name=name, node=schema)


TOOL_SCHEMAS = {
    "train_schema": TrainSchema,
    "evaluate_schema": EvaluateSchema,
    "predict_schema": PredictSchema,
    "export_schema": ExportSchema,
    "select_schema": SelectSchema,
}
