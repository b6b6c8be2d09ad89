"""The MLflow layout of a sweep: the tag names raysweep writes, the run roles, and the run-search filters.

One module for the writer (raysweep's tracking and sync) and the readers (the report and
:mod:`analysis.mlflow_io`), so a tag is spelled once. It lives in ``analysis`` because imports point one
way: ``raysweep`` uses ``analysis``, never the reverse.

Layout: one parent run per sweep (role ``sweep``), one child run per trial (role ``trial``) and one per
configuration's seed average (role ``summary``), children linked by ``mlflow.parentRunId``.
"""

from __future__ import annotations

PARENT = "mlflow.parentRunId"
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI opens an experiment on the view this names
TRAINING_RUNS_KIND = "custom_model_development"  # ... the training-runs view (not the GenAI overview)
# A saved view of the runs table (MLflow's "share view": the experiment tag <prefix><key>, opened with
# ?viewStateShareKey=<key>): raysweep's shows each sweep's parent and its summary runs, not the trials.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
COMPARISON_VIEW = "raysweep"

ROLE = "raysweep.role"
SWEEP, TRIAL, SUMMARY = "sweep", "trial", "summary"

# The parent run of a sweep
SWEEP_ID = "raysweep.sweep_id"
SPEC_NAME = "raysweep.spec_name"
AXES = "raysweep.axes"
METRIC = "raysweep.metric"
DIRECTION = "raysweep.direction"
TABLE = "raysweep.table"
STORAGE = "raysweep.storage"
MODE = "raysweep.mode"
TWO_PHASE = "raysweep.two_phase"
SCHEDULER = "raysweep.scheduler"

# A trial run
TRIAL_KEY = "raysweep.trial_key"
CONFIG_ID = "raysweep.config_id"
SEED = "raysweep.seed"
LABEL = "raysweep.label"
PHASE = "raysweep.phase"
METHOD = "raysweep.method"
DATASET = "raysweep.dataset"
PLAN_INDEX = "raysweep.plan_index"
RAY_TRIAL_ID = "raysweep.ray_trial_id"
STOP_REASON = "raysweep.stop_reason"
EPOCHS_RUN = "raysweep.epochs_run"
NODE_ID = "raysweep.node_id"
NODE_IDS = "raysweep.node_ids"
NODE_IP = "raysweep.node_ip"
HOSTNAME = "raysweep.hostname"
GROUP = "raysweep.group"  # the Ray trial a grouped member trained in

# A summary run
SUMMARY_OF = "raysweep.summary_of"
TRIAL_RUNS = "raysweep.trial_runs"
N_SEEDS = "raysweep.n_seeds"
UNITS = "raysweep.units"  # accuracies in percent, as in the tables
VS_BASELINE = "raysweep.vs_baseline"  # better / worse / same / not tested, against the table's baseline

# The sweep's headline and model selection, on the parent run
SELECTION = "raysweep.selection"  # one sentence: which split selected configurations
SELECTION_WARNING = "raysweep.selection_warning"
BEST_CONFIG = "raysweep.best_config"  # "<label> [<config_id>]"
BEST_CONFIG_ID = "raysweep.best_config_id"
BEST_SUMMARY_RUN = "raysweep.best_summary_run"
BEST_N_SEEDS = "raysweep.best_n_seeds"
# parent metrics best.<metric>_mean, best.<metric>_std, best.<metric>_vs_<baseline>; with several settings of the
# data axes, one set each: best.<setting>.<metric>_mean (e.g. best.imbalance_10.test_acc_mean)
HEADLINE_PREFIX = "best."


def sweep_filter(sweep_id: str) -> str:
    """The parent run of sweep ``sweep_id``."""
    return f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{ROLE}` = '{SWEEP}'"


def role_filter(role: str) -> str:
    """Every run of one role in an experiment (e.g. every sweep's parent)."""
    return f"tags.`{ROLE}` = '{role}'"


def children_filter(parent_run_id: str, role: str) -> str:
    """The runs of one role under a sweep's parent run."""
    return f"tags.{PARENT} = '{parent_run_id}' and tags.`{ROLE}` = '{role}'"
