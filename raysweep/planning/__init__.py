"""What a sweep will run and what it will cost, before anything runs.

- ``plan``: the phases, phase 1's planned trials, trial groups, phase-2 selection, ``raysweep plan``'s text;
- ``calibrate``: timing a few steps of each distinct trial here (``plan --calibrate``);
- ``estimate``: the wall-time model that lays the timed trials onto slots.
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    # ``plan`` and ``calibrate`` are also module names (a submodule import would shadow them): import them
    # from their modules, or use raysweep.plan.
    "phases": "plan", "Phase": "plan", "group_trials": "plan", "describe_plan": "plan",
    "Calibration": "calibrate", "estimate_wall_time": "estimate",
})
