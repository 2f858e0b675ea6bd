"""Frozen-stage feature cache: compute the frozen stages' output once, train the rest on it.

Exact only where the frozen stages see no random augmentation (see ``plan.cache_plan``); the
trained checkpoint is still the whole model (``TransferClassifier.net``).
"""

from transfer_lightning.cache.datamodule import CachedFeatureDataModule
from transfer_lightning.cache.key import cache_key, data_fingerprint, tensor_fingerprint
from transfer_lightning.cache.plan import CachePlan, cache_plan
from transfer_lightning.cache.setup import FeatureCacheReport, use_feature_cache
from transfer_lightning.cache.store import FeatureCache

__all__ = [
    "CachePlan",
    "CachedFeatureDataModule",
    "FeatureCache",
    "FeatureCacheReport",
    "cache_key",
    "cache_plan",
    "data_fingerprint",
    "tensor_fingerprint",
    "use_feature_cache",
]
