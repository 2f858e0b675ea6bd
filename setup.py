"""The wheel's packages: everything else about the project is in pyproject.toml.

``conf/`` stays at the top of the repository and ships inside the wheel as the package
``transfer_lightning.conf`` (each config group a sub-folder of YAML files), so an installed
``transfer_lightning`` finds its configs (``transfer_lightning/utils/config_folder.py``) and Hydra can
name them ``pkg://transfer_lightning.conf``. pyproject.toml alone cannot both discover the packages
and map a folder from elsewhere into one of them, hence this file.
"""

from setuptools import find_namespace_packages, setup

CODE = find_namespace_packages(include=["transfer_lightning*", "hydra_plugins*"], exclude=["*__pycache__*"])
CONFIGS = ["transfer_lightning.conf"] + [
    f"transfer_lightning.conf.{group}" for group in find_namespace_packages(where="conf", exclude=["*__pycache__*"])
]

setup(
    packages=CODE + CONFIGS,
    package_dir={"transfer_lightning.conf": "conf"},
    package_data={package: ["*.yaml"] for package in CONFIGS},
)
