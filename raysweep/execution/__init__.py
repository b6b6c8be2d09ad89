"""Running a sweep on Ray: the preflights, the session of phases, the Tuner, the cluster, the progress line.

- ``runner``: :func:`run_sweep` / :func:`resume_sweep`, the entry points that set a session up;
- ``session``: one sweep in one driver (phases run or restored, the manifest kept, the result built);
- ``tuner``: one phase as a new or restored Ray Tune experiment;
- ``preflight``: every check before a sweep exists, and the Ray connection;
- ``cluster``: joining a cluster or starting a loopback-only local Ray; the shared-storage check;
- ``progress``: the live progress display.

The top layer below the CLI: it may import every other subpackage.
"""

from raysweep._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "run_sweep": "runner", "resume_sweep": "runner", "SweepResult": "session", "SweepSession": "session",
})
