"""Names that become folder names, and paths that must stay inside their folder.

A spec's ``name`` becomes the sweep folder ``<storage>/<name>-<timestamp>[-k]`` (and ``...-confirm`` for
phase 2); ``tracking.experiment`` becomes ``<store folder>/mlartifacts/<experiment>`` on a sqlite store.
A name with a separator, ``..``, a leading dot or a NUL would steer those paths elsewhere (``../../x``
wrote artifacts two folders up; ``..`` scattered run folders into the working directory), and one that
is too long fails deep inside Ray or MLflow with ``OSError: File name too long`` after things started.
:func:`check_name` refuses all of these before anything starts; :func:`contained` checks a derived path.
"""

from __future__ import annotations

import os
import time
import unicodedata
from pathlib import Path

from trainables.params import ConfigError

COMPONENT_MAX_BYTES = 255  # the longest file name ext4, xfs, btrfs, tmpfs and NFS accept, in bytes
# The sweep id is <name>-<timestamp>, or <name>-<timestamp>-<k> (2 <= k <= MAX_CLAIMS) when that folder is
# taken (raysweep.tracking.manifest.claim_sweep_dir); phase 2's Ray experiment folder is <sweep id><CONFIRM_SUFFIX>.
SWEEP_TIMESTAMP = "%Y%m%d-%H%M%S"
MAX_CLAIMS = 999
CONFIRM_SUFFIX = "-confirm"
LONGEST_ID_SUFFIX = f"-{time.strftime(SWEEP_TIMESTAMP, time.gmtime(0))}-{MAX_CLAIMS}{CONFIRM_SUFFIX}"
MAX_NAME_BYTES = COMPONENT_MAX_BYTES - len(LONGEST_ID_SUFFIX)  # 227


def check_name(value: object, field: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """``value`` if it can be used as one folder name inside a folder, else a ConfigError naming ``field``.

    Refused: anything but a non-empty string; ``.`` and ``..``; a leading dot (hidden, and ``..x`` reads
    like a parent); ``/``, ``\\`` or the platform's separators; NUL and other control characters; more than
    ``max_bytes`` bytes in UTF-8 (default: what is left of a 255-byte file name once the sweep id's
    timestamp, a collision suffix and ``-confirm`` are added).
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"must be a non-empty string, got {value!r}")
    if value in (".", ".."):
        raise ConfigError(field, f"must not be {value!r}: it names a folder, not a new one inside it")
    if value.startswith("."):
        raise ConfigError(field, f"must not start with '.', got {value!r}")
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    found = sorted(c for c in separators if c in value)
    if found:
        raise ConfigError(field, f"must not contain a path separator ({' '.join(found)}), got {value!r}")
    control = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise ConfigError(field, f"must not contain control characters (found {control!r}), got {value!r}")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise ConfigError(field, f"is {size} bytes long; at most {max_bytes} bytes (it becomes part of a file name, "
                                 f"and file systems cap one at {COMPONENT_MAX_BYTES})")
    return value


def contained(root: str | os.PathLike, path: str | os.PathLike, field: str) -> Path:
    """``path`` resolved (symlinks followed), if it is ``root`` or inside it; else a ConfigError naming ``field``.

    A relative ``path`` is taken relative to ``root``. For artifact locations derived from names, e.g.
    ``contained(store_dir / "mlartifacts", store_dir / "mlartifacts" / experiment, "tracking.experiment")``.
    """
    base = Path(root).expanduser().resolve()
    target = Path(path).expanduser()
    target = (target if target.is_absolute() else base / target).resolve()
    if target != base and base not in target.parents:
        raise ConfigError(field, f"{path} leads to {target}, outside {base}")
    return target
