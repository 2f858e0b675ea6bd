"""The config's schemas (typed, with allowed values and docs), their one check, and the allowlist of
what may be built from a file: all importable before torch."""

from transfer_lightning.config.schemas import register_schemas

register_schemas()  # before any composition: every YAML names its schema first in its defaults
