"""Where the Hydra configs are: one helper for every command, tool and test.

``conf/`` sits at the top of the repository, where users of the lightning-hydra-template layout
look for it. A wheel ships the same files inside the package, as ``transfer_lightning.conf``
(``setup.py`` maps the folder), so an installed copy works from any folder and Hydra can also name
them ``pkg://transfer_lightning.conf`` (e.g. in ``hydra.searchpath``).
"""

from __future__ import annotations

from pathlib import Path

import transfer_lightning

PACKAGE = "transfer_lightning.conf"


def config_folder() -> Path:
    """The config folder that belongs to this ``transfer_lightning``: inside the installed package (a
    wheel), or beside it at the top of a source checkout (installed editable or not).

    Found from the package's own location rather than by importing ``transfer_lightning.conf``: a
    checkout run with another checkout's editable install on its path still reads its own configs.
    """
    package = Path(transfer_lightning.__file__).resolve().parent
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(
        f"transfer_lightning's configs are missing: no config.yaml in {package / 'conf'} (an installed wheel) "
        f"or {package.parent / 'conf'} (a source checkout); reinstall the package"
    )
