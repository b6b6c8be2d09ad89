"""Image-list datasets written in the real formats for the tests: image folders plus ``path label`` lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_lists(root: Path, counts: dict[str, list[int]], *, size: tuple[int, int] = (30, 40),
                      ext: str = "png", prefix: str = "ImageNet_LT", seed: int | None = None) -> Path:
    """``<split>/c<c>/<i>.<ext>`` images plus ``<prefix>_<split>.txt`` lists (``counts``: split -> per-class counts).

    Each image's red channel is its id (0, 1, 2, ... over all splits), the others 40 * class, so a constant
    image survives any resize; with ``seed`` the green channel is random texture instead (for pixel checks).
    """
    from PIL import Image

    rng = None if seed is None else np.random.default_rng(seed)
    next_id = 0
    for split, per_class in counts.items():
        lines = []
        for c, n in enumerate(per_class):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.full((*size, 3), 40 * c, dtype=np.uint8)
                pixels[:, :, 0] = next_id % 256
                if rng is not None:
                    pixels[:, :, 1] = rng.integers(0, 256, size=size, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{c}" / f"{i}.{ext}")
                lines.append(f"{split}/c{c}/{i}.{ext} {c}")
                next_id += 1
        (root / f"{prefix}_{split}.txt").write_text("\n".join(lines) + "\n")
    return root
