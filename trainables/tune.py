"""The one module of ``trainables`` that knows Ray: a function trainable around :func:`trainables.loop.train`.

Reports every epoch with a checkpoint through Ray 2.60's ``tune.report`` / ``tune.get_checkpoint``
(``ray.train.report`` makes a Tune trial error in 2.60). Resumes from the trial's latest checkpoint, so
retries after a failure and restored sweeps continue the same trajectory.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import torch
from ray import tune

from trainables.checkpoint import load_state, save_state
from trainables.loop import train


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable. ``config["trial"]`` is a planned trial (see ``raysweep.plan``)."""
    config = config["trial"]
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, math.floor(cpus)))
    gpu_fraction = config.get("gpu_fraction")
    if gpu_fraction and torch.cuda.is_available():
        # Fractional GPUs are bookkeeping in Ray; cap this process's share of the card for real.
        torch.cuda.set_per_process_memory_fraction(float(gpu_fraction))

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            resume = load_state(directory)

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            save_state(state, directory)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    trial_config = {k: v for k, v in config.items() if k not in ("gpu_fraction",)}
    try:
        train(trial_config, report=report, resume_state=resume)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
