"""The study's tables (Markdown) from its run directories, so no number is copied by hand.

    python research/table.py RUNS [--out research/results]

RUNS is the folder given to run_study.sh. Writes one Markdown file per table into --out (the files
that docs/reproduction.md embeds, through tools/update_docs.py) and prints them.
Paired comparisons score both models on the same test images (research/compare.py).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from s3f_edge.testing import require_data  # noqa: E402

DUPLICATES = ROOT / "docs" / "brain_mri_test_duplicates.txt"
RECIPE_CHANGES = {
    "baseline-moving": "original recipe (BatchNorm moving averages)",
    "baseline-precise": "precise BatchNorm statistics (the default)",
    "baseline-noweights": "precise BN, no class weights",
    "baseline-augment": "precise BN, --augment (flips, rotations)",
    "baseline-lr1e-3": "precise BN, learning rate 1e-3",
    "baseline-lrpat3": "precise BN, LR-plateau patience 3",
    "baseline-noweights-augment": "precise BN, no class weights, --augment",
    "s3f-moving": "original recipe (BatchNorm moving averages)",
    "s3f-precise": "precise BatchNorm statistics (the default)",
}


def wall_times(runs: Path) -> dict[str, int]:
    """Seconds each run trained, from run_study.sh's log: a run resumed has one line per sitting (their sum),
    pauses are negative lines. A sitting that never wrote its end line (the machine went down under it: a
    "started" line with no time after it, or a "lost" line) makes the run's time unknown, so it is left out."""
    path = runs / "wall_times.txt"
    if not path.exists():
        return {}
    total: dict[str, int] = {}
    open_sitting: set[str] = set()
    unknown: set[str] = set()
    for name, entry, *_ in (line.split() for line in path.read_text().splitlines() if line.strip()):
        if entry in ("started", "lost"):
            if entry == "lost" or name in open_sitting:
                unknown.add(name)
            open_sitting.add(name)
            continue
        if not entry.startswith("-"):
            open_sitting.discard(name)
        total[name] = total.get(name, 0) + int(entry)
    unknown |= open_sitting  # still running, or cut short by the machine: not known yet
    return {name: seconds for name, seconds in total.items() if name not in unknown}


def trained_seed(run: Path) -> int:
    """The seed a run was trained with, as its config.json records it."""
    return json.loads((run / "config.json").read_text())["options"]["seed"]


def run_summary(run: Path) -> dict | None:
    if not (run / "metrics.json").exists():
        return None
    metrics = json.loads((run / "metrics.json").read_text())
    config = json.loads((run / "config.json").read_text())
    state = json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else None
    if state and not state.get("stopped") and state["epochs_done"] < config["options"]["epochs"]:
        return None  # being extended to more epochs: its metrics.json is the shorter budget's
    with open(run / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    best = max(history, key=lambda r: float(r["val_selection_score"]))
    floor = config["options"]["min_learning_rate"] * 1.001  # stored as float32 in history.csv
    # The (1-based) epochs after whose plateau step the rate is at the floor. "learning_rate_used" is the rate
    # an epoch trained with, so the step that set it ended the epoch before (0-based row e: 1-based epoch e);
    # older files logged "learning_rate", the rate after the epoch's own step (row e: epoch e + 1).
    column, shift = ("learning_rate_used", 0) if "learning_rate_used" in history[0] else ("learning_rate", 1)
    at_floor = [int(r["epoch"]) + shift for r in history if float(r[column]) <= floor]
    dedup_path = run / "evaluate-dedup" / "metrics.json"
    test = metrics["test"]
    predicted_classes = sum(1 for column in zip(*test["confusion_matrix"]) if sum(column) > 0)
    return {
        "name": run.name, "seed": trained_seed(run), "epochs": len(history), "best_epoch": int(best["epoch"]) + 1,
        "size": "×".join(str(s) for s in config["options"]["image_size"]),
        "val": metrics["validation"]["accuracy"], "test": test["accuracy"], "f1": test["f1_macro"],
        "kappa": test["cohen_kappa"], "auc": test["roc_auc_macro"], "classes_predicted": predicted_classes,
        "class_names": config["class_names"],
        "recalls": [row[i] / sum(row) for i, row in enumerate(test["confusion_matrix"])],
        "train_accuracy_last": float(history[-1]["accuracy"]),
        "dedup": json.loads(dedup_path.read_text())["metrics"]["accuracy"] if dedup_path.exists() else None,
        "images_per_second": metrics["timing"].get("train_images_per_second"),
        "lr_floor_epoch": at_floor[0] if at_floor else None,  # from here on the plateau schedule has nothing left
        "lr_patience": config["options"]["lr_patience"],
    }


def model_name(run_name: str) -> str:
    """A study run's model: the run name without its dataset prefix, "-lrpatN" and "-seedN"."""
    return re.sub(r"^[^-]+-|(-lrpat\d+)?(-seed\d+)?$", "", run_name)


def percent(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def mean_sd(values: list[float], fmt) -> str:
    """'mean ± sd' over seeds (fmt formats one number); a single value as itself, none as '-'."""
    if len(values) > 1:
        return f"{fmt(statistics.mean(values))} ± {fmt(statistics.stdev(values))}"
    return fmt(values[0]) if values else "-"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]) + "\n"


def recipe_table(runs: Path) -> str:
    wall = wall_times(runs)
    rows = []
    order = list(RECIPE_CHANGES)
    found = [(run, re.sub(r"^recipe-|-seed\d+$", "", run.name)) for run in runs.glob("recipe-*") if run.is_dir()]
    for run, key in sorted(found, key=lambda item: (order.index(item[1]), item[0].name)):
        summary = run_summary(run)
        if summary is None:
            continue
        model, change = ("S³F-Net (SN2, concat)" if key.startswith("s3f") else "Spatial baseline"), RECIPE_CHANGES[key]
        rows.append([model, change, summary["seed"], percent(summary["val"]), percent(summary["test"]),
                     f"{summary['kappa']:.3f}", f"{summary['f1']:.3f}", f"{summary['auc']:.3f}",
                     f"{summary['classes_predicted']} of 3", f"{summary['train_accuracy_last']:.3f}",
                     f"{wall[run.name] / 60:.0f}" if run.name in wall else "-"])
    return table(["Model", "Recipe", "Seed", "Val acc", "Test acc", "κ", "Macro-F1", "AUC", "Classes predicted (test)",
                  "Train acc (last epoch, dropout on)", "Wall min"], rows)


COMPARED_SEEDS = (0, 1, 2)  # every recipe ran on these; the default recipe also on more (reference_runs)
# The reference command: `s3f-edge train BUSI/ --preset busi --model baseline --image-size 64 --epochs 12`, the
# default recipe at a fixed 12-epoch budget. The thresholds were fixed before the runs, so that no result could move
# them: the test accuracy and Cohen's kappa the reference command is judged by, and the test accuracy both BUSI
# 128x128 models of a same-budget pair are judged by.
REFERENCE_THRESHOLD = (0.60, 0.30)
REFERENCE_EPOCHS = 12
REFERENCE_SEEDS = 8  # run_study.sh runs the reference command on seeds 0-7, at every budget
BUDGET_EPOCHS = (24, 48)  # run_study.sh part "budget": the reference command, trained longer
BUSI_THRESHOLD = 0.75


def run_seed(run: Path) -> int:
    """The seed in a run's name, "-seedN" (none: 0); unlike trained_seed it needs no config.json yet."""
    match = re.search(r"-seed(\d+)$", run.name)
    return int(match.group(1)) if match else 0


def recipe_seed_table(runs: Path) -> str:
    """Each recipe tried on several seeds (the same ones for all): mean ± sd over seeds, and the mean recall of
    every class (what a higher accuracy bought: on imbalanced data it can come from favouring the largest class)."""
    groups: dict[str, list[dict]] = {}
    for run in runs.glob("recipe-baseline-*"):
        if run_seed(run) in COMPARED_SEEDS and (summary := run_summary(run)):
            groups.setdefault(re.sub(r"^recipe-|-seed\d+$", "", run.name), []).append(summary)
    order = list(RECIPE_CHANGES)
    rows, names = [], []
    for key in sorted((k for k, v in groups.items() if len(v) > 1), key=order.index):
        summaries = groups[key]
        names = summaries[0]["class_names"]
        rows.append([RECIPE_CHANGES[key], len(summaries), mean_sd([s["test"] for s in summaries], lambda v: f"{v:.1%}"),
                     mean_sd([s["kappa"] for s in summaries], lambda v: f"{v:.3f}"),
                     mean_sd([s["f1"] for s in summaries], lambda v: f"{v:.3f}")] + mean_recalls(summaries))
    return table(["Spatial baseline, recipe", "Seeds", "Test acc", "κ", "Macro-F1"]
                 + [f"Recall {name}" for name in names], rows)


def mean_recalls(summaries: list[dict]) -> list[str]:
    """Each class's recall on the test set, averaged over the runs."""
    return [f"{statistics.mean(s['recalls'][i] for s in summaries):.2f}" for i in range(len(summaries[0]["recalls"]))]


def finished_by_seed(found) -> list[dict]:
    """The summaries of the finished runs among ``found``, seeds in order."""
    return sorted((summary for run in found if (summary := run_summary(run))), key=lambda s: s["seed"])


def seed_zero(summaries: list[dict]) -> dict | None:
    """The run with seed 0, the seed `s3f-edge train` uses unless told otherwise."""
    return next((s for s in summaries if s["seed"] == 0), None)


def reference_runs(runs: Path) -> list[dict]:
    """The finished runs of the reference command (the default recipe at 64x64, 12 epochs), by seed."""
    return finished_by_seed([runs / "recipe-baseline-precise", *runs.glob("recipe-baseline-precise-seed*")])


def meets_reference_threshold(summary: dict) -> bool:
    min_accuracy, min_kappa = REFERENCE_THRESHOLD
    return summary["test"] >= min_accuracy and summary["kappa"] >= min_kappa


def reference_table(runs: Path) -> str:
    """The reference command seed by seed: validation and test accuracy, κ, and whether it reaches the threshold."""
    min_accuracy, min_kappa = REFERENCE_THRESHOLD
    rows = [[s["seed"], percent(s["val"]), percent(s["test"]), f"{s['kappa']:.3f}",
             "yes" if meets_reference_threshold(s) else "no"] for s in reference_runs(runs)]
    return table(["Seed", "Val acc", "Test acc", "κ", f"≥ {min_accuracy * 100:.0f} % and κ ≥ {min_kappa}"], rows)


def threshold_summary(summaries: list[dict]) -> str:
    """'N of M seeds' on which the reference threshold is reached, the seeds where it is not, and how many of the
    planned seeds are still to finish."""
    missed = [str(s["seed"]) for s in summaries if not meets_reference_threshold(s)]
    return (f"{len(summaries) - len(missed)} of {len(summaries)} seeds"
            + (f" (not seed{'s' if len(missed) > 1 else ''} {', '.join(missed)})" if missed else "")
            + (f", {len(summaries)} of the {REFERENCE_SEEDS} planned finished"
               if len(summaries) < REFERENCE_SEEDS else ""))


def reference_line(runs: Path) -> str | None:
    summaries = reference_runs(runs)
    if not summaries:
        return None
    min_accuracy, min_kappa = REFERENCE_THRESHOLD
    tests = [s["test"] for s in summaries]
    seed0 = seed_zero(summaries)
    return (f"The reference command (BUSI, baseline, 64×64, {REFERENCE_EPOCHS} epochs, default recipe): "
            f"≥ {min_accuracy * 100:.0f} % test accuracy and κ ≥ {min_kappa} on {threshold_summary(summaries)}"
            + (f"; test accuracy over the {len(tests)} seeds {mean_sd(tests, lambda v: f'{v:.1%}')}"
               if len(tests) > 1 else "")
            + (f"; the command's default seed 0: {seed0['test']:.1%}, κ {seed0['kappa']:.3f}" if seed0 else "")
            + ".")


def runs_by_budget(runs: Path) -> dict[int, list[dict]]:
    """The reference command's finished runs by epoch budget: its own 12 epochs, then run_study.sh's part
    "budget"; a budget with no finished run is left out."""
    budgets = {REFERENCE_EPOCHS: reference_runs(runs)}
    for epochs in BUDGET_EPOCHS:
        budgets[epochs] = finished_by_seed(runs.glob(f"budget-baseline-epochs{epochs}-seed*"))
    return {epochs: summaries for epochs, summaries in budgets.items() if summaries}


def budget_table(runs: Path) -> str:
    """The reference command at each epoch budget: means ± sd over seeds, each class's recall (a budget that bought
    accuracy by favouring the largest class would show here), the threshold per seed, seed 0 on its own, and the
    change from its 12 epochs seed by seed (a seed starts from the same weights and, on this CPU, trains the same
    first 12 epochs to the last digit)."""
    min_accuracy, min_kappa = REFERENCE_THRESHOLD
    budgets = runs_by_budget(runs)
    reference_budget = {s["seed"]: s["test"] for s in budgets.get(REFERENCE_EPOCHS, [])}
    rows, names = [], []
    for epochs, summaries in budgets.items():
        names = summaries[0]["class_names"]
        seed0 = seed_zero(summaries)
        gains = [] if epochs == REFERENCE_EPOCHS else [(s["test"] - reference_budget[s["seed"]]) * 100
                                                        for s in summaries if s["seed"] in reference_budget]
        rows.append([f"{epochs}" + (" (the reference)" if epochs == REFERENCE_EPOCHS else ""),
                     ", ".join(str(s["seed"]) for s in summaries),
                     mean_sd([s["val"] for s in summaries], lambda v: f"{v:.1%}"),
                     mean_sd([s["test"] for s in summaries], lambda v: f"{v:.1%}"),
                     mean_sd([s["kappa"] for s in summaries], lambda v: f"{v:.3f}")] + mean_recalls(summaries)
                    + [threshold_summary(summaries), f"{seed0['test']:.1%}, κ {seed0['kappa']:.3f}" if seed0 else "-",
                       ", ".join(percent(s["test"]) for s in summaries),
                       f"{statistics.mean(gains):+.1f} ({sum(g > 0 for g in gains)} of {len(gains)} higher)"
                       if gains else "-",
                       f"{min(s['best_epoch'] for s in summaries)}–{max(s['best_epoch'] for s in summaries)}",
                       f"{statistics.mean(s['train_accuracy_last'] for s in summaries):.3f}"])
    return table(["Epochs", "Seeds", "Val acc", "Test acc", "κ"] + [f"Recall {name}" for name in names]
                 + [f"≥ {min_accuracy * 100:.0f} % and κ ≥ {min_kappa}", "Seed 0 (the default): test acc, κ",
                    "Test acc per seed", f"Test acc minus {REFERENCE_EPOCHS} epochs', same seed: mean points",
                    "Selected epoch (range)", "Train acc, last epoch (dropout on), mean"], rows)


def budget_line(runs: Path) -> str | None:
    longer = {epochs: summaries for epochs, summaries in runs_by_budget(runs).items() if epochs != REFERENCE_EPOCHS}
    if not longer:
        return None
    parts = []
    for epochs, summaries in longer.items():
        tests = [s["test"] for s in summaries]
        seed0 = seed_zero(summaries)
        parts.append(f"{epochs} epochs, the threshold reached on {threshold_summary(summaries)}"
                     + (f", test accuracy {mean_sd(tests, lambda v: f'{v:.1%}')}" if len(tests) > 1 else "")
                     + (f", seed 0 {seed0['test']:.1%} (κ {seed0['kappa']:.3f})" if seed0 else ""))
    return "The same command trained longer, nothing else changed: " + "; ".join(parts) + "."


def results_table(runs: Path, prefix: str) -> str:
    wall = wall_times(runs)
    rows = []
    summaries = [summary for run in runs.glob(f"{prefix}-*") if run.is_dir() and (summary := run_summary(run))]
    for summary in sorted(summaries, key=lambda s: (s["lr_patience"], s["seed"], s["name"])):  # each pair together
        name = summary["name"]
        rows.append([model_name(name), summary["seed"], summary["size"],
                     f"{summary['epochs']} ({summary['best_epoch']})", summary["lr_patience"],
                     percent(summary["val"]), percent(summary["test"]), percent(summary["dedup"]),
                     f"{summary['f1']:.3f}", f"{summary['kappa']:.3f}", f"{summary['auc']:.3f}",
                     summary["lr_floor_epoch"] or "-", f"{wall[name] / 60:.0f}" if name in wall else "-"])
    return table(["Model", "Seed", "Size", "Epochs (best)", "LR-plateau patience", "Val acc", "Test acc",
                  "Test acc de-dup", "Macro-F1", "κ", "AUC", "LR at its floor after epoch", "Wall min"], rows)


def seed_groups(runs: Path, pattern: str) -> dict[str, list[dict]]:
    """The finished runs matching pattern (e.g. "brain-*-seed*"), by model_name, seeds in order."""
    groups: dict[str, list[dict]] = {}
    for run in runs.glob(pattern):
        summary = run_summary(run) if run.is_dir() else None
        if summary:
            groups.setdefault(model_name(run.name), []).append(summary)
    return {model: sorted(summaries, key=lambda s: s["seed"]) for model, summaries in sorted(groups.items())}


def brain_seed_groups(runs: Path) -> dict[str, list[dict]]:
    return seed_groups(runs, "brain-*-seed*")


def busi_seed_groups(runs: Path) -> dict[str, list[dict]]:
    """BUSI 128x128 with the preset's schedule (run_study.sh parts busi-lr and busi-seeds), by model."""
    return seed_groups(runs, "busi-*-lrpat40*")


def seed_summary(groups: dict[str, list[dict]], dedup: bool = True) -> str:
    """Mean ± sd over seeds for each model (official and, for brain MRI, de-duplicated test accuracy)."""
    rows = []
    for model, summaries in groups.items():
        tests = [s["test"] for s in summaries]
        dedups = [s["dedup"] for s in summaries if s["dedup"] is not None]
        rows.append([model, ", ".join(str(s["seed"]) for s in summaries), mean_sd(tests, lambda v: f"{v:.2%}")]
                    + ([mean_sd(dedups, lambda v: f"{v:.2%}")] if dedup else []) + [", ".join(map(percent, tests))])
    return table(["Model", "Seeds", "Test acc (mean ± sd)"] + (["De-dup (mean ± sd)"] if dedup else []) + ["Per seed"],
                 rows)


def paired_results(runs: Path, pairs: list[tuple[str, str, str]]) -> list[dict]:
    """Paired bootstrap + McNemar on the same test images for each (label, run A, run B) whose runs are done:
    A - B, on the official test set and (brain MRI) the de-duplicated one."""
    from compare import compare, correct_per_image

    results = []
    for label, run_a, run_b in pairs:
        a, b = runs / run_a / "model.keras", runs / run_b / "model.keras"
        if not (a.exists() and b.exists() and (runs / run_a / "metrics.json").exists()
                and (runs / run_b / "metrics.json").exists()):
            continue
        data = require_data("brain_tumor_mri" if run_a.startswith("brain") else "busi")
        sets = [("official", None)] + ([("de-duplicated", DUPLICATES)] if run_a.startswith("brain") else [])
        for name, exclude in sets:
            results.append({"label": label, "set": name, "seed": trained_seed(runs / run_a),
                            **compare(correct_per_image(a, data / "test", exclude),
                                      correct_per_image(b, data / "test", exclude))})
    return results


def paired_table(results: list[dict]) -> str:
    rows = []
    for result in results:
        low, high = result["difference_95ci"]
        rows.append([result["label"], f"{result['set']} ({result['images']})", percent(result["accuracy_a"]),
                     percent(result["accuracy_b"]),
                     f"{result['difference'] * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}]",
                     f"{result['only_a_right']} / {result['only_b_right']}", f"{result['mcnemar_exact_p']:.2g}"])
    return table(["A vs B", "Test set", "Acc A", "Acc B", "A − B, points [95 % CI]", "only A right / only B right",
                  "McNemar p"], rows)


# BUSI 128x128, S3F-Net SN2 concat against the baseline at the same budget: one pair per LR schedule and seed.
PATIENCE_4, PRESET_SCHEDULE = "LR-plateau patience 4", "LR-plateau patience 40 (the preset's)"
BUSI_PAIRS = {  # label: (schedule, seed, run A, run B, the run_study.sh part that trains them)
    f"S³F-Net concat vs baseline, {PATIENCE_4}, seed 0": (PATIENCE_4, 0, "busi-s3f-concat", "busi-baseline", "busi"),
    f"S³F-Net concat vs baseline, {PRESET_SCHEDULE}, seed 0": (PRESET_SCHEDULE, 0, "busi-s3f-concat-lrpat40",
                                                               "busi-baseline-lrpat40", "busi-lr"),
    **{f"S³F-Net concat vs baseline, {PRESET_SCHEDULE}, seed {seed}": (
        PRESET_SCHEDULE, seed, f"busi-s3f-concat-lrpat40-seed{seed}", f"busi-baseline-lrpat40-seed{seed}", "busi-seeds")
       for seed in (1, 2)},
}
PLANNED_SEEDS = 3  # per brain MRI model, as run_study.sh plans them


def interval(result: dict) -> str:
    low, high = result["difference_95ci"]
    return f"95 % interval {low * 100:+.2f} to {high * 100:+.2f}"


def noise_verdict(pairs: list[dict], spreads: list[float]) -> str:
    """The fixed rule: S³F-Net helps (hurts) beyond seed noise only if every seed's paired 95 % interval lies above
    (below) zero and the mean difference exceeds both models' seed-to-seed standard deviation (points)."""
    mean = statistics.mean(r["difference"] * 100 for r in pairs)
    both_spreads = len(spreads) == 2
    if all(r["difference_95ci"][0] > 0 for r in pairs) and both_spreads and mean > max(spreads):
        return "the spectral branch helps beyond seed noise"
    if all(r["difference_95ci"][1] < 0 for r in pairs) and both_spreads and -mean > max(spreads):
        return "the spectral branch hurts beyond seed noise"
    return "a gain (or loss) beyond seed noise is not established"


def seed_spreads(groups: dict[str, list[dict]], models: tuple[str, str]) -> dict[str, float]:
    """Seed-to-seed standard deviation of test accuracy (points) of each of the models with more than one seed."""
    return {model: statistics.stdev(s["test"] for s in groups[model]) * 100
            for model in models if len(groups.get(model, [])) > 1}


def seed_verdict(dataset: str, pairs: list[dict], groups: dict[str, list[dict]]) -> str:
    """The verdict of noise_verdict over a dataset's paired seeds (official test set), with the numbers it rests on;
    the seed spreads over the same seeds as the pairs (a model may have finished more)."""
    differences = [r["difference"] * 100 for r in pairs]
    seeds = {r["seed"] for r in pairs}
    spreads = seed_spreads({model: [s for s in summaries if s["seed"] in seeds] for model, summaries in groups.items()},
                           ("s3f-concat", "baseline"))
    above = sum(r["difference_95ci"][0] > 0 for r in pairs)
    below = sum(r["difference_95ci"][1] < 0 for r in pairs)
    return (f"**{dataset}, verdict: {noise_verdict(pairs, list(spreads.values()))}.** S³F-Net (concatenation) minus "
            f"the baseline on the official test set: {statistics.mean(differences):+.2f} points on average over "
            f"{len(pairs)} seed(s) (per seed: " + ", ".join(f"{d:+.2f}" for d in differences) + "); the paired 95 % "
            f"interval lies above zero on {above} and below zero on {below} of them; seed-to-seed standard deviation "
            "of test accuracy: "
            + ", ".join(f"{model} {spread:.2f}" for model, spread in sorted(spreads.items()))
            + " points. (Rule: every seed's interval on one side of zero, and the mean difference larger than both "
            "models' seed-to-seed standard deviation.)")


def busi_lines(runs: Path, busi: list[dict]) -> list[str]:
    """Each finished BUSI pair; the preset schedule's verdict over seeds; finished runs whose pair has not finished;
    the pairs not finished; and the BUSI threshold, counted per schedule: the seeds on which both models of the
    pair reach it."""
    lines = []
    finished = {r["label"]: r for r in busi if r["label"] in BUSI_PAIRS}
    by_schedule: dict[str, list[dict]] = {}
    waiting: dict[str, list[int]] = {}
    waiting_parts: dict[str, None] = {}  # the run_study.sh parts that train them, in order
    for label, (schedule, seed, *_, part) in BUSI_PAIRS.items():
        if label not in finished:
            waiting.setdefault(schedule, []).append(seed)
            waiting_parts[part] = None
            continue
        result = finished[label]
        by_schedule.setdefault(schedule, []).append(result | {"seed": seed})
        reached = [name for name, value in (("S³F-Net", result["accuracy_a"]), ("baseline", result["accuracy_b"]))
                   if value >= BUSI_THRESHOLD]
        lines.append(f"BUSI at 128×128, {schedule}, seed {seed}: S³F-Net {result['accuracy_a']:.1%}, baseline "
                     f"{result['accuracy_b']:.1%} on the official test set ({result['difference'] * 100:+.2f} points, "
                     f"{interval(result)}); {BUSI_THRESHOLD * 100:.0f} % for both: "
                     f"{'yes' if len(reached) == 2 else 'no'}"
                     + (f" (reached by {', '.join(reached)})" if reached and len(reached) < 2 else "") + ".")
    groups = busi_seed_groups(runs)
    preset = by_schedule.get(PRESET_SCHEDULE, [])
    if len(preset) > 1:
        lines.append(seed_verdict(f"BUSI at 128×128, {PRESET_SCHEDULE}", preset, groups))
    paired_seeds = {r["seed"] for r in preset}
    unpaired = [f"{model} seed {s['seed']} {percent(s['test'])}" for model, summaries in groups.items()
                for s in summaries if s["seed"] not in paired_seeds]
    if unpaired:
        lines.append(f"BUSI at 128×128, {PRESET_SCHEDULE}, finished runs whose pair has not finished, test accuracy: "
                     + ", ".join(unpaired) + ".")
    if waiting:
        parts = " ".join(waiting_parts)
        several = sum(map(len, waiting.values())) > 1
        lines.append("BUSI at 128×128, " + "; ".join(f"{schedule}, seed{'s' if len(seeds) > 1 else ''} "
                                                     f"{', '.join(map(str, seeds))}"
                                                     for schedule, seeds in waiting.items())
                     + f": {'pairs' if several else 'pair'} not finished (`bash research/run_study.sh RUNS {parts}` "
                     + f"runs or resumes {'them' if several else 'it'}).")
    counts = [f"{sum(r['accuracy_a'] >= BUSI_THRESHOLD and r['accuracy_b'] >= BUSI_THRESHOLD for r in results)} of "
              f"{len(results)} finished seed{'s' if len(results) > 1 else ''} with {schedule}"
              for schedule, results in by_schedule.items()]
    lines.append(f"Seeds on which both BUSI 128×128 models reach ≥ {BUSI_THRESHOLD * 100:.0f} % test accuracy at the "
                 "same budget: " + ("; ".join(counts) if counts else "no pair has finished yet") + ".")
    return lines


def conclusion(runs: Path, brain: list[dict], busi: list[dict]) -> str:
    """The study's answer in numbers, each verdict over seeds by the fixed rule of noise_verdict."""
    lines = []
    concat = [r for r in brain if r["label"].startswith("S³F concat") and r["set"] == "official"]
    if concat:
        lines.append(seed_verdict("Brain MRI", concat, brain_seed_groups(runs)))
        if len(concat) < PLANNED_SEEDS:
            lines[-1] += (f" Both models have finished {len(concat)} of the {PLANNED_SEEDS} planned seeds; "
                          "`bash research/run_study.sh RUNS brain` resumes the rest.")
    bilinear = [r for r in brain if r["label"].startswith("S³F bilinear") and r["set"] == "official"]
    if not bilinear:
        lines.append("Bilinear fusion (seed 0): not run yet.")
    else:
        lines.append(f"Bilinear fusion minus the baseline (seed 0, official test set): "
                     f"{bilinear[0]['difference'] * 100:+.2f} points ({interval(bilinear[0])}).")
    lines += busi_lines(runs, busi)
    for line in (reference_line(runs), budget_line(runs)):
        if line:
            lines.append(line)
    return "\n\n".join(lines) + "\n" if lines else "(no finished runs yet)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="?", default=Path("runs/study"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({run_seed(run) for run in args.runs.glob("brain-*-seed*") if run.is_dir()})
    brain_pairs = paired_results(args.runs, [(f"S³F concat vs baseline, seed {s}", f"brain-s3f-concat-seed{s}",
                                              f"brain-baseline-seed{s}") for s in seeds]
                                 + [("S³F bilinear vs baseline, seed 0", "brain-s3f-bilinear-seed0",
                                     "brain-baseline-seed0")])
    busi_pairs = paired_results(args.runs, [(label, a, b) for label, (_, _, a, b, _) in BUSI_PAIRS.items()]
                                + [("baseline: LR-plateau patience 40 vs 4", "busi-baseline-lrpat40", "busi-baseline"),
                                   ("S³F-Net: LR-plateau patience 40 vs 4", "busi-s3f-concat-lrpat40",
                                    "busi-s3f-concat")])
    recipe_pairs = paired_results(args.runs, [("baseline: precise vs moving (64×64)", "recipe-baseline-precise",
                                               "recipe-baseline-moving")])
    outputs = {
        "recipe.md": recipe_table(args.runs),
        "recipe_seeds.md": recipe_seed_table(args.runs),
        "recipe_paired.md": paired_table(recipe_pairs),
        "recipe_reference.md": reference_table(args.runs),
        "recipe_budget.md": budget_table(args.runs),
        "busi.md": results_table(args.runs, "busi"),
        "busi_paired.md": paired_table(busi_pairs),
        "brain.md": results_table(args.runs, "brain"),
        "brain_seeds.md": seed_summary(brain_seed_groups(args.runs)),
        "busi_seeds.md": seed_summary(busi_seed_groups(args.runs), dedup=False),
        "brain_paired.md": paired_table(brain_pairs),
        "conclusion.md": conclusion(args.runs, brain_pairs, busi_pairs),
    }
    for name, text in outputs.items():
        (args.out / name).write_text(text)
        print(f"\n{name}\n\n{text}")


if __name__ == "__main__":
    main()
