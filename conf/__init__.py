"""The Hydra configs, one folder per config group; a wheel ships them as ``transfer_lightning.conf``
(``setup.py``), found by ``transfer_lightning/utils/config_folder.py``."""
