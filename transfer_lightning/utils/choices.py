"""The allowed values of the config's enumerated settings, owned here and imported by the code that acts
on them: the command line's checks read them before torch loads (``run/validation.py``)."""

# data/contract.py: data.interpolation
INTERPOLATIONS = ("bilinear", "bicubic")
# data/transforms.py: data.augment
AUGMENTATIONS = ("none", "standard")
# data/image_folder.py: data.on_bad_file, data.balance, data.cache
ON_BAD_FILE = ("skip", "error")
BALANCE = ("none", "weighted_sampler")
CACHE = ("auto", "memory", "disk", "none")
# strategies/: strategy.lr_decay_unit, and strategy.frozen_stages by meaning rather than by number
# (the same preset on every backbone)
LR_DECAY_UNITS = ("stage", "block")
ALL_STAGES, ALL_BUT_LAST = "all", "all_but_last"
