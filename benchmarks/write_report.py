"""Render docs/benchmarks.md from the JSON results in benchmarks/results/ (each measured in one run)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import RESULTS_DIR

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _provenance(r: dict) -> str:
    v = r["versions"]
    return (f"_Measured {r['time']} at commit `{r['git_commit'][:12]}` on {r['machine']['cpus']} CPUs "
            f"({r['machine']['processor']}, 1-min load {r['machine']['load_average_1m']:.1f}); torch {v['torch']}, "
            f"ray {v['ray']}, mlflow {v['mlflow']}, optuna {v['optuna']}._")


def _pm(cell: dict | None) -> str:
    return "-" if not cell else f"{cell['mean']:.1f} ± {cell['std']:.1f}"


def method_cost(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.method_cost --repeats {s['repeats']}`: {s['dataset']} (imbalance "
           f"{s['imbalance']:g}), {s['model']}, batch {s['batch_size']}, {s['threads']} thread, epochs interleaved in "
           "a "
           "shuffled order, median over repeats after a warm-up epoch. An epoch includes evaluation.", "",
           "| method | s / epoch | x CE |", "|---|---|---|"]
    for name, m in sorted(r["methods"].items(), key=lambda kv: kv[1]["ratio_to_ce"]):
        out.append(f"| {name} | {m['median_s']:.4f} | {m['ratio_to_ce']:.2f} |")
    return out + ["", _provenance(r)]


def runner(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.runner_efficiency --trials {' '.join(map(str, s['trials']))} "
           f"--trial-seconds {s['trial_seconds']:g}` ({r['epoch_seconds']:.2f} s epochs).", "",
           "| trials | MLflow | epochs / trial | wall (s) | busy (s) | efficiency = busy / (wall x 2 slots) |",
           "|---|---|---|---|---|---|"]
    for row in r["runs"]:
        out.append(f"| {row['trials']} | {'on' if row['mlflow'] else 'off'} | {row['epochs']} | {row['wall_s']:.1f} | "
                   f"{row['busy_s']:.1f} | {row['efficiency']:.3f} |")
    return out + ["", _provenance(r)]


def overhead(r: dict) -> list[str]:
    t = r["single_trial"]
    out = ["Command: `python -m benchmarks.trial_overhead` (one CE trial on mnist1d-LT, cnn1d, 8 epochs; then the "
           "bundled quickstart).", "",
           "| stage | seconds |", "|---|---|",
           f"| `ray.init` (2 CPUs) | {t['ray_init_s']:.2f} |",
           f"| `fit()` start -> trial started (Tune set-up, actor) | {t['fit_to_trial_start_s']:.2f} |",
           "| trial started -> first result (imports, data build, model, first epoch, checkpoint) | "
           f"{t['trial_start_to_first_result_s']:.2f} |",
           f"| first epoch's compute | {t['first_epoch_compute_s']:.3f} |",
           f"| steady epoch's compute (median) | {t['steady_epoch_compute_s']:.3f} |",
           f"| steady interval between results, seen by the driver | {t['steady_result_interval_s']:.3f} |"]
    d = r.get("demo")
    if d:
        out += ["", f"Quickstart (`raysweep demo`'s sweep, {d['trials']} trials over {d['slots']} slots): wall "
                f"{d['wall_s']:.0f} s, busy {d['busy_s']:.0f} s, so {100 * d['overhead_fraction']:.0f} % of the slot "
                "time is "
                "overhead: its epochs are tens of milliseconds, the per-trial start-up several seconds."]
    return out + ["", _provenance(r)]


def asha(r: dict) -> list[str]:
    out = [f"Command: `python -m benchmarks.asha_vs_grid --epochs {r['settings']['epochs']}`: CDB-W-CE tau in "
           "{0.5, 1, 2, sigmoid} x lr in {0.02, 0.05, 0.1, 0.2}, mnist1d-LT rho 100, one seed, cnn1d.", "",
           "| scheduler | trials | trial-epochs | best config (by val) | its val acc | its test acc | wall (s) |",
           "|---|---|---|---|---|---|---|"]
    for run in (r["grid"], r["asha"]):
        out.append(f"| {run['scheduler']['name']} | {run['trials']} | {run['trial_epochs']} | {run['best_label']} | "
                   f"{100 * run['best_val']:.1f} | {100 * run['best_test']:.1f} | {run['wall_s']:.0f} |")
    out += ["", "Spearman rank correlation between the validation accuracy at each ASHA rung and the final one "
            "(full-grid curves): " + ", ".join(f"epoch {k}: {v:.2f}" for k, v in r["rung_rank_correlation"].items())]
    return out + ["", _provenance(r)]


def _rows(cells: dict, section: str) -> list[str]:
    """Row labels in the benchmark's own job order (a merged re-run appends its rows at the end)."""
    from benchmarks.reproduction import jobs

    order: dict[str, int] = {}
    for job in jobs([section], 1, 1):
        order.setdefault(job["row"], len(order))
    rows = list(dict.fromkeys(c["row"] for c in cells.values()))
    return sorted(rows, key=lambda row: order.get(row, len(order) + rows.index(row)))


def _grid(cells: dict, value: str, title: str, extra: str | None = None, section: str = "") -> list[str]:
    """A rows x columns table of one value (mean ± std), with an optional second value in brackets."""
    if not cells:
        return []
    rows = _rows(cells, section)
    cols = list(dict.fromkeys(c["col"] for c in cells.values()))
    header = "| | " + " | ".join(str(c) for c in cols) + " |"
    lines = ["", f"**{title}**", "", header, "|---" * (len(cols) + 1) + "|"]
    for row in rows:
        out = []
        for c in cols:
            cell = cells.get(f"{row}|{c}", {})
            text = _pm(cell.get(value))
            if extra and cell.get(extra):
                text += f" [{cell[extra]['mean']:.2f}]"
            out.append(text)
        lines.append(f"| {row} | " + " | ".join(out) + " |")
    return lines


def _reruns(r: dict) -> list[str]:
    """Provenance of a results file updated by ``--methods`` re-runs: the first run and each re-run."""
    if "reruns" not in r:
        return [_provenance(r)]
    first = {**r, **r["first_run"]}
    out = ["_First measured " + _provenance(first)[len("_Measured "):]]
    for run in r["reruns"]:
        out.append(f"_Re-run of {', '.join(run['methods'])} ({run['runs']} runs, {run['wall_s'] / 60:.1f} min) "
                   f"{run['time']} at commit `{run['git_commit'][:12]}`; the other rows are the first run's._")
    return out


def reproduction(r: dict) -> list[str]:
    t = r["tables"]
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.reproduction` ({s['seeds']} seeds, {s['epochs']} epochs, cnn1d, SGD 0.1 "
           "cosine, batch 128, 10 meta/val images per class, `val_per_class: 0`; 20 per class under noise). Test "
           "accuracy %, mean ± sample std over seeds. No model is selected: final and best-epoch test accuracy."]
    if "sanity" in t:
        cell = t["sanity"]["ce|balanced"]
        out += ["", f"**Sanity**: CE + 1-D CNN on balanced mnist1d: {_pm(cell['final'])} % (best epoch "
                f"{_pm(cell['best'])} %); the mnist1d authors publish 94 % for a CNN on the same 4000/1000 split."]
    if "long_tail" in t:
        out += ["", "**Long-tailed mnist1d** (final test accuracy; many / medium / few at rho 100)", "",
                "| method | rho 10 | rho 100 | many | medium | few |", "|---|---|---|---|---|---|"]
        for row in _rows(t["long_tail"], "long_tail"):
            c10, c100 = t["long_tail"].get(f"{row}|10", {}), t["long_tail"].get(f"{row}|100", {})
            out.append(f"| {row} | {_pm(c10.get('final'))} | {_pm(c100.get('final'))} | {_pm(c100.get('many'))} | "
                       f"{_pm(c100.get('medium'))} | {_pm(c100.get('few'))} |")
    out += _grid(t.get("noise", {}), "best", "Symmetric noise: best-epoch test accuracy (columns: noise rate)",
                 section="noise")
    out += _grid(t.get("noise", {}), "final", "Symmetric noise: final test accuracy (columns: noise rate)",
                 section="noise")
    out += _grid(t.get("cdb_tau", {}), "final", "CDB-W-CE tau sensitivity (final test accuracy; columns: imbalance; "
                 "[mean tau used])", extra="tau_mean", section="cdb_tau")
    out += _grid(t.get("dm_grid", {}), "final", "DM lambda x beta at 40% symmetric noise (final test accuracy)",
                 section="dm_grid")
    out += _grid(t.get("dm_grid", {}), "best", "DM lambda x beta at 40% symmetric noise (best-epoch test accuracy)",
                 section="dm_grid")
    return out + ["", f"Wall time {r['wall_s'] / 60:.1f} min (first run).", ""] + _reruns(r)


def cdb_tau_evidence(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.cdb_tau_evidence` ({s['seeds']} seeds, {s['epochs']} epochs, the "
           "reproduction settings, in-process). Final test accuracy %, mean ± sample std over seeds; in brackets "
           "the tau CDB used, averaged over the epochs. The choice of CDB's default tau rests on this table "
           "(docs/methods/class_difficulty.md)."]
    out += _grid(r["tables"]["cdb_tau_evidence"], "final", "CE vs CDB-W-CE and CDB-S per tau (columns: imbalance)",
                 extra="tau_mean")
    return out + ["", f"Wall time {r['wall_s'] / 60:.1f} min.", "", _provenance(r)]


def fused_vs_loop(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.fused_vs_loop --repeats {s['repeats']}`: {s['method']} on {s['dataset']} "
           f"(imbalance {s['imbalance']:g}), batch {s['batch_size']}, {s['threads']} thread; k members of one "
           "configuration, one epoch each per round (evaluation included), medians of interleaved rounds. "
           "Speed-up = loop's round time / the fused engine's (above 1: fused is faster).", "",
           "| model | k | loop samples/s | fused samples/s | fused x loop | vmap fused x loop |",
           "|---|---|---|---|---|---|"]
    for model, m in r["models"].items():
        for k, c in m["k"].items():
            out.append(f"| {model} | {k} | {c['loop']['samples_per_s']:.0f} | {c['fused']['samples_per_s']:.0f} | "
                       f"{c['fused_speedup']:.2f} | {c['fused_vmap_speedup']:.2f} |")
    return out + ["", _provenance(r)]


def groups_grid(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.groups grid --epochs {s['epochs']} --repeats {s['repeats']}`: CDB-W-CE "
           f"tau in {s['taus']} x imbalance in {s['imbalances']} x {s['seeds']} seeds = 64 trials of {s['epochs']} "
           f"epochs on mnist1d-LT, {s['model']}, {s['cpu_per_trial']} CPU per trial, every variant a whole "
           "`raysweep run` (or the peer script) timed from start to exit, in a shuffled order. The peer is the "
           "same grid as a plain Ray Tune script: a function trainable around the same training loop, "
           "`tune.Tuner` over a grid, Ray's `MLflowLoggerCallback`, with Tune's defaults (a new actor per "
           "trial) and with `reuse_actors=True` (what raysweep sets).", "",
           "| variant | Ray trials | trial-epochs | wall (s, median) |", "|---|---|---|---|"]
    for name, runs in r["runs"].items():
        if runs:
            out.append(f"| {name} | {runs[0].get('groups', runs[0]['trials'])} | {runs[0]['trial_epochs']} | "
                       f"{r['median_wall_s'][name]:.1f} |")
    out += ["", "Ratios (wall time of the first over the second): "
            + ", ".join(f"{k.replace('_over_', ' / ')} {v:.2f}" for k, v in r["ratios"].items()) + "."]
    return out + ["", _provenance(r)]


def groups_quickstart(r: dict) -> list[str]:
    out = [f"Command: `python -m benchmarks.groups quickstart --repeats {r['settings']['repeats']}`: "
           "`raysweep/specs/quickstart.yaml` with `--set` overrides, each a whole `raysweep run`.", "",
           "| variant | trials | Ray trials | trial-epochs | chosen configuration | its test acc % | wall (s) | "
           "speed-up |", "|---|---|---|---|---|---|---|---|"]
    for name, runs in r["runs"].items():
        row = runs[0]
        test = row["best"].get("test_acc_mean")
        out.append(f"| {name} | {row['trials']} | {row['groups']} | {row['trial_epochs']} | {row['best_config']} | "
                   f"{'-' if test is None else f'{100 * test:.1f}'} | {r['median_wall_s'][name]:.1f} | "
                   f"{r['speedup'][name]:.2f} |")
    return out + ["", _provenance(r)]


def groups_asha(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.groups asha --epochs {s['epochs']}`: {s['grid']}, {s['seeds']} seeds, "
           f"ASHA grace period {s['grace_period']}, reduction factor {s['reduction_factor']}. Grouped: one phase, "
           "each configuration's seeds in one Ray trial, ASHA on their mean. Two-phase: ASHA on one seed, then "
           f"the top {s['top_k']} with every seed, sized for about equal trial-epochs.", "",
           "| search | trial-epochs | chosen configuration | val bal. acc % | test acc % | wall (s) |",
           "|---|---|---|---|---|---|"]
    for name, row in (("ASHA on the seed mean, seeds grouped", r["grouped"]), ("two-phase, ungrouped", r["two_phase"])):
        b = row["best"]
        out.append(f"| {name} | {row['trial_epochs']} | {row['best_config']} | "
                   f"{100 * b['val_balanced_acc_mean']:.1f} | {100 * b['test_acc_mean']:.1f} ± "
                   f"{100 * b['test_acc_std']:.1f} | {row['wall_s']:.1f} |")
    return out + ["", f"Two-phase wall / grouped wall: {r['speedup']:.2f}.", "", _provenance(r)]


def calibration(r: dict) -> list[str]:
    out = ["Command: `python -m benchmarks.calibration`: `raysweep plan --calibrate` on a small spec (CE, focal, "
           "CB; 2 seeds; 8 epochs; 1 CPU per trial), then `raysweep run` of it, timed as a user waits.", "",
           "| scheduler | estimate (s) | measured (s) | estimate / measured | 1-min load before -> after |",
           "|---|---|---|---|---|"]
    for name, c in r["results"].items():
        load = c["load_average_1m"]
        out.append(f"| {name} | {c['estimate_s']:.1f} | {c['measured_s']:.1f} | {c['ratio']:.2f} | "
                   f"{load['before']:.1f} -> {load['after']:.1f} |")
    return out + ["", _provenance(r)]


def fault_tests_under_load(r: dict) -> list[str]:
    s = r["settings"]
    out = [f"Command: `python -m benchmarks.fault_tests_under_load`: the end-to-end fault tests (pytest paths: "
           f"{len(s['tests'])}), {s['runs']} runs in a row beside {s['burners']} CPU-bound `while True` processes.", "",
           "| run | exit | passed | failed | errors | skipped | wall (s) | 1-min load before -> after |",
           "|---|---|---|---|---|---|---|---|"]
    for index, run in enumerate(r["runs"], 1):
        load = run["load_average_1m"]
        out.append(f"| {index} | {run['returncode']} | {run['passed']} | {run['failed']} | {run['errors']} | "
                   f"{run['skipped']} | {run['wall_s']:.0f} | {load['before']:.1f} -> {load['after']:.1f} |")
    failing = [line for run in r["runs"] for line in run["failing"]]
    return out + ([""] + [f"- {line}" for line in failing] if failing else []) + ["", _provenance(r)]


def floor(r: dict) -> list[str]:
    s = r["settings"]
    spec = s["spec"]
    model = spec["model"] if isinstance(spec["model"], str) else spec["model"]["name"]
    out = [f"Command: `python -m benchmarks.floor compare --spec {s['name']} --rounds {s['rounds']}`: "
           f"the spec `{spec['name']}` ({len(spec['methods'])} methods, {spec.get('seeds', 1)} seeds, "
           f"{spec['train']['epochs']} epochs, {model} on {spec['dataset']['name']}, "
           f"`cpu: {spec['resources']['cpu']}`), every variant a whole process (or "
           f"processes) timed from start to exit, in a shuffled order each round, on {s['cores']} cores. The floor "
           "is the same planned trials trained by `trainables.loop.train` in one Python process, no Ray, no MLflow; "
           "each ratio is a run's wall time over the floor of its own round.", "",
           "| variant | median wall (s) | x floor (median) | x floor (range) | median 1-min load |",
           "|---|---|---|---|---|"]
    for name, v in r["summary"].items():
        low, high = v["ratio_to_floor_range"]
        out.append(f"| {name} | {v['median_wall_s']:.1f} | {v['ratio_to_floor_median']:.2f} | {low:.2f}-{high:.2f} | "
                   f"{v['median_load_1m']:.1f} |")
    if any(name.startswith("Ray Tune training nothing") for name in r["summary"]):
        out += ["", "Ray Tune training nothing: the same number of Tune trials, one worker per core and actors reused "
                    "as raysweep runs them, each only importing torch and building its trial's model and SGD "
                    "optimizer, then reporting once; no MLflow, no checkpoint. It is the lower bound of any runner "
                    "that trains in Ray Tune's workers on this machine."]
    if "plain Ray Tune script" in r["summary"]:
        out += ["", "The plain Ray Tune script slower than every raysweep variant in every round: "
                    f"{'yes' if r['peer_slower_every_round'] else 'no'}."]
    return out + ["", _provenance(r)]


def floor_breakdown(r: dict) -> list[str]:
    out = [f"Command: `python -m benchmarks.floor breakdown --runs {r['settings']['runs']}`: one `raysweep run` of "
           "the 12-trial spec with a clock on each stage (the driver's own functions wrapped; the exit timed from "
           "outside), median of the runs. Stages inside Ray's start overlap (the store opens beside it).", "",
           "| stage | seconds (median) |", "|---|---|"]
    out += [f"| {k.removesuffix('_s').replace('_', ' ')} | {v:.2f} |" for k, v in r["median"].items()]
    return out + ["", _provenance(r)]


def image_store(r: dict) -> list[str]:
    mb = 1e6
    counts, stores = r["counts"], r["store_bytes"]
    out = [f"Command: `python -m benchmarks.image_store`: a synthetic ImageNet-LT-shaped JPEG set ({counts['train']} "
           f"training images in {r.get('classes', 100)} long-tailed classes, {counts['val']} val, "
           f"{counts['test']} test; 375 x 500 JPEGs), each trial a process doing a trial's data path with one CPU: "
           "`load_splits`, one epoch of training batches of 128 (the papers' RandomResizedCrop + flip from the "
           "store), the test set's evaluation views. PSS sums to the machine's total; \"data\" is a trial's "
           "memory minus its runtime's (interpreter, torch, raysweep after imports, measured in the trial).", "",
           f"Stores: train {stores['train'] / mb:.0f} MB (short side 256, aspect kept), val "
           f"{stores['val'] / mb:.0f} MB and test {stores['test'] / mb:.0f} MB (224 x 224): "
           f"{r['stores_built']} stores, each built once for 4 trials "
           f"starting together (cold start {r['cold_start']['wall_s']:.0f} s wall, loads "
           f"{', '.join(f'{s:.1f}' for s in r['cold_start']['load_s'])} s: one decoded, three waited).", "",
           "| concurrent trials | machine PSS peak (MB) | steady (MB) | data PSS steady (MB) | runtimes (MB) | "
           "data-private per trial, peak (MB) | images/s per trial |", "|---|---|---|---|---|---|---|"]
    for m in r["memory"]:
        out.append(f"| {m['trials']} | {m['peak_pss_total'] / mb:.0f} | {m['steady_pss_total'] / mb:.0f} | "
                   f"{m['data_steady_pss_total'] / mb:.0f} | {m['runtime_pss_total'] / mb:.0f} | "
                   f"{max(m['data_peak_private_per_trial']) / mb:.0f} | "
                   f"{min(m['images_per_s']):.0f}-{max(m['images_per_s']):.0f} |")
    out += ["", f"4 trials against 1: machine PSS {r['ratio_4_to_1']:.2f}x, data PSS {r['data_ratio_4_to_1']:.2f}x "
                f"(target 1.3x); a trial's data-private peak is "
                f"{max(max(m['data_peak_private_per_trial']) for m in r['memory']) / mb:.0f} MB, "
                f"{100 * r['private_fraction_of_store']:.1f} % of this small store (target < 10 %): bound by the batch "
                "(crops, the evaluation chunk), not by the data set, so it is 0.2 % of ImageNet-LT's.", "",
            f"Images/s, one trial, one CPU: store {r['store_images_per_s']:.0f}, stream "
            f"{r['stream_images_per_s']:.0f} (decoding the 375 x 500 JPEGs per batch); decoding into the store: "
            f"{r['decode_images_per_core_s']:.0f} images/s on one core.", "",
            "Extrapolated to the real datasets at the defaults (store_size 256, image_size 224; the measured bytes per "
            "image, a trial's measured data-private peak plus 16 bytes of index and label per image, and this run's "
            "rates, which under its load are upper bounds of the core-minutes; the old path: decoded 224 squares held "
            "twice per trial, the issue's measurement):", "",
            "| dataset | images (train + eval) | store per node (GB) | private per trial (GB) | node with 4 trials "
            "(GB) | old path: per trial / 4 trials (GB) | cold build (core-min) | epoch, store / stream (core-min) |",
            "|---|---|---|---|---|---|---|---|"]
    for e in r["extrapolation"]:
        out.append(f"| {e['dataset']} | {e['train_images']:,} + {e['eval_images']:,} | {e['store_gb']:.1f} | "
                   f"{e['private_per_trial_gb']:.2f} | {e['node_4_trials_gb']:.1f} | "
                   f"{e['old_per_trial_peak_gb']:.0f} / {e['old_4_trials_gb']:.0f} | {e['cold_build_core_min']:.0f} | "
                   f"{e['epoch_store_core_min']:.0f} / {e['epoch_stream_core_min']:.0f} |")
    return out + ["", _provenance(r)]


SECTIONS = [
    ("Method cost per epoch", "method_cost", method_cost),
    ("Runner efficiency, 16 trials", "runner_efficiency_16", runner),
    ("Runner efficiency, 64 trials", "runner_efficiency_64", runner),
    ("Per-trial overhead", "trial_overhead", overhead),
    ("ASHA versus the full grid", "asha_vs_grid", asha),
    ("Reproduction on embedded data", "reproduction", reproduction),
    ("CDB's default tau: the evidence", "cdb_tau_evidence", cdb_tau_evidence),
    ("Trial groups: fused versus loop engine", "fused_vs_loop", fused_vs_loop),
    ("Trial groups: the 64-trial grid", "groups_grid", groups_grid),
    ("Trial groups: the quickstart", "groups_quickstart", groups_quickstart),
    ("Trial groups: ASHA on the seed mean versus two-phase", "groups_asha", groups_asha),
    ("plan --calibrate: estimate versus measured", "calibration", calibration),
    ("Fault tests under load", "fault_tests_under_load", fault_tests_under_load),
    ("Paper-scale image data: one store per node", "image_store", image_store),
    ("The floor: what a small sweep costs", "floor_perf", floor),
    ("The floor: where a small sweep's time goes", "floor_breakdown_perf", floor_breakdown),
    ("The floor: the 64-trial grid", "floor_grid", floor),
]


def main() -> None:
    lines = ["# Benchmarks", "", "Produced by `make bench` (`python -m benchmarks.run_all`), which runs every "
                                 "benchmark "
             "below and then this page's generator (`python -m benchmarks.write_report`). Each figure was measured "
             "in one run on the machine named under it; speeds are ratios within that run. GPU benchmarks "
             "(`benchmarks/gpu_groups.py`: fractional-GPU packing and fused groups) are not part of the CPU suite.", ""]
    for title, name, render in SECTIONS:
        result = _load(name)
        lines += [f"## {title}", ""]
        lines += render(result) if result else ["Not measured yet: run the command of this section."]
        lines.append("")
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    DOC.write_text("\n".join(lines))
    print("wrote", DOC)


if __name__ == "__main__":
    main()
