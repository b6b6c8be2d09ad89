"""The fixed cost of a sweep (issue 25): what the driver and the workers import, the generated-data cache
keyed by its source's config, the exit, and the worker count."""

from __future__ import annotations

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    out = subprocess.run([sys.executable, "-c", f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=300)
    return set(out.stdout.split())


def test_driver_and_worker_do_not_import_the_compiler_stack_or_torchvision():
    """torchvision (and torch._dynamo through torchvision.ops) costs about 3 s a process; only an
    AutoAugment operation needs it."""
    modules = imported_after("import raysweep.cli, raysweep.runner, trainables.tune, trainables.loop")
    assert not {m for m in modules if m == "torchvision" or m.startswith(("torchvision.", "torch._dynamo"))}


def test_autoaugment_policies_are_torchvisions():
    from torchvision.transforms import AutoAugmentPolicy

    from trainables.data.augment import POLICIES

    assert sorted(POLICIES) == sorted(p.value for p in AutoAugmentPolicy)
