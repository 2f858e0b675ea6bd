"""The training recipe's pieces, each from the field's own library, on the device and batched.

- ``augment.py``: the augmentation policies of ``data.augment`` (kornia), every image its own draw;
- ``mixup.py``: mixup and CutMix of training batches (timm's ``Mixup``), soft targets out;
- ``loss.py``: cross-entropy with label smoothing and class weights, on labels or soft targets (timm's
  ``SoftTargetCrossEntropy``);
- ``ema.py``: an exponential moving average of the weights (Lightning's ``EMAWeightAveraging``);
- ``tta.py``: test-time augmentation (``tta=flip``) for evaluate, predict and export;
- ``linear_probe.py``: the head fitted on the frozen backbone's cached features (the LP of LP-FT).

``conf/recipe/`` combines them into presets (``recipe=book|fastai|timm``); README "Recipes".
"""
