"""The study's table script (research/table.py) must not report a run that is still training, nor a wall
time for a sitting that has not ended: its tables go into docs/reproduction.md unedited."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

TABLE_PY = Path(__file__).resolve().parents[1] / "table.py"


@pytest.fixture(scope="module")
def table():
    spec = importlib.util.spec_from_file_location("study_table", TABLE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wall_times_sum_sittings_drop_pauses_and_leave_open_or_lost_sittings_unknown(table, tmp_path):
    (tmp_path / "wall_times.txt").write_text("\n".join([
        "done started", "done -30 (paused)", "done 100",            # one sitting, 30 s of it paused
        "resumed started", "resumed 50", "resumed started", "resumed 70",
        "cut started", "cut started", "cut 40",                     # first sitting never ended
        "lost 10", "lost lost",
        "running 60", "running started", "running -5 (paused)",     # its second sitting is still going
    ]) + "\n")
    assert table.wall_times(tmp_path) == {"done": 70, "resumed": 120}


def _fake_run(run: Path, *, epochs_planned: int, epochs_done: int, history_rows: int, lr_patience: int = 4,
              seed: int = 0, accuracy: float = 0.7, kappa: float = 0.5, history_format: str = "learning_rate_used",
              confusion_matrix: tuple = ((3, 1), (1, 3))) -> Path:
    run.mkdir()
    test = {"accuracy": accuracy, "f1_macro": 0.6, "cohen_kappa": kappa, "roc_auc_macro": 0.8,
            "confusion_matrix": [list(row) for row in confusion_matrix]}
    (run / "metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.75}, "test": test, "timing": {}}))
    (run / "config.json").write_text(json.dumps({"class_names": ["a", "b"],
                                                 "options": {"seed": seed, "image_size": [64, 64],
                                                             "epochs": epochs_planned, "min_learning_rate": 1e-6,
                                                             "lr_patience": lr_patience}}))
    (run / "state.json").write_text(json.dumps({"epochs_done": epochs_done, "stopped": False}))
    with open(run / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "accuracy", "val_selection_score", history_format])
        # The plateau step at the end of (0-based) epoch 20 sets the floor: a "learning_rate" column logs it on
        # that epoch's row, "learning_rate_used" on the next. Float32 rounding as Keras logs it: 1e-6 reads back as
        # 9.999999974752427e-07.
        first_row_at_floor = 20 if history_format == "learning_rate" else 21
        writer.writerows([i, 0.5, 0.1 * i, 3e-4 if i < first_row_at_floor else 9.999999974752427e-07]
                         for i in range(history_rows))
    return run


@pytest.mark.parametrize("history_format", ["learning_rate_used", "learning_rate"])
def test_a_run_being_extended_is_not_a_row(table, tmp_path, history_format):
    finished = table.run_summary(_fake_run(tmp_path / "a", epochs_planned=25, epochs_done=25, history_rows=25,
                                           history_format=history_format))
    assert finished is not None and finished["epochs"] == 25 and finished["best_epoch"] == 25
    assert finished["lr_floor_epoch"] == 21  # the first epoch (1-based) at whose end the rate is at its minimum
    # asked for 60 epochs and resumed: metrics.json is still the 25-epoch one, history has grown
    assert table.run_summary(_fake_run(tmp_path / "b", epochs_planned=60, epochs_done=35, history_rows=35)) is None


def _busi_pair(label: str, accuracy_s3f: float, accuracy_baseline: float) -> dict:
    return {"label": label, "set": "official", "accuracy_a": accuracy_s3f, "accuracy_b": accuracy_baseline,
            "difference": accuracy_s3f - accuracy_baseline, "difference_95ci": (-0.05, 0.05)}


def test_busi_threshold_counts_per_schedule_the_seeds_on_which_both_models_of_the_pair_reach_75_percent(table,
                                                                                                      tmp_path):
    patience_4, *patience_40 = table.BUSI_PAIRS  # patience 40: seeds 0, 1, 2
    both = lambda busi: table.conclusion(tmp_path, [], busi).strip().splitlines()[-1]  # noqa: E731
    # one model above the threshold in each pair is not "both at the same budget"
    assert both([_busi_pair(patience_4, 0.76, 0.72)]
               + [_busi_pair(label, 0.70, 0.78) for label in patience_40]).endswith(
        ": 0 of 1 finished seed with LR-plateau patience 4; 0 of 3 finished seeds with LR-plateau patience 40 "
        "(the preset's).")
    # every schedule is reported, the one that did worse over more seeds too
    assert both([_busi_pair(patience_4, 0.76, 0.75), _busi_pair(patience_40[0], 0.75, 0.78),
                _busi_pair(patience_40[1], 0.80, 0.74), _busi_pair(patience_40[2], 0.76, 0.76)]).endswith(
        ": 1 of 1 finished seed with LR-plateau patience 4; 2 of 3 finished seeds with LR-plateau patience 40 "
        "(the preset's).")
    assert both([]).endswith(": no pair has finished yet.")
    waiting = table.conclusion(tmp_path, [], [_busi_pair(patience_4, 0.70, 0.72)])
    assert ("LR-plateau patience 40 (the preset's), seeds 0, 1, 2: pairs not finished "
            "(`bash research/run_study.sh RUNS busi-lr busi-seeds` runs or resumes them)" in waiting)
    one_waiting = table.conclusion(tmp_path, [], [_busi_pair(label, 0.8, 0.8)
                                                  for label in (patience_4, *patience_40[:2])])
    assert ("(the preset's), seed 2: pair not finished (`bash research/run_study.sh RUNS busi-seeds` runs or resumes "
            "it)" in one_waiting)
    # over two or more seeds of the preset's schedule, the verdict of the brain MRI rule; not on one seed
    assert "**BUSI at 128×128, LR-plateau patience 40 (the preset's), verdict:" in one_waiting
    one_seed = table.conclusion(tmp_path, [], [_busi_pair(patience_4, 0.8, 0.8), _busi_pair(patience_40[0], 0.8, 0.8)])
    assert "verdict:" not in one_seed


def test_finished_busi_runs_whose_pair_is_not_finished_are_reported_on_their_own(table, tmp_path):
    for name, seed, accuracy in [("busi-baseline-lrpat40", 0, 0.76), ("busi-s3f-concat-lrpat40", 0, 0.83),
                                 ("busi-baseline-lrpat40-seed1", 1, 0.74)]:
        _fake_run(tmp_path / name, epochs_planned=60, epochs_done=60, history_rows=60, lr_patience=40, seed=seed,
                  accuracy=accuracy)
    text = table.conclusion(tmp_path, [], [
        _busi_pair(table.PRESET_SCHEDULE.join(["S³F-Net concat vs baseline, ", ", seed 0"]), 0.83, 0.76)])
    assert "finished runs whose pair has not finished, test accuracy: baseline seed 1 74.0%." in text


def test_seed_verdict_takes_each_models_spread_over_the_paired_seeds_only(table):
    runs = {"baseline": [{"seed": 0, "test": 0.76}, {"seed": 1, "test": 0.74}, {"seed": 2, "test": 0.90}],
            "s3f-concat": [{"seed": 0, "test": 0.82}, {"seed": 1, "test": 0.80}]}
    pairs = [{"seed": seed, "difference": 0.06, "difference_95ci": (0.01, 0.11)} for seed in (0, 1)]
    text = table.seed_verdict("BUSI", pairs, runs)  # baseline seed 2 has no pair yet: not in its spread
    assert "seed-to-seed standard deviation of test accuracy: baseline 1.41, s3f-concat 1.41 points" in text
    assert "verdict: the spectral branch helps beyond seed noise" in text


def test_spectral_branch_verdict_needs_every_interval_on_one_side_and_a_mean_beyond_both_seed_spreads(table):
    def pairs(*differences):
        return [{"difference": d, "difference_95ci": (d - 0.02, d + 0.02)} for d in differences]

    assert table.noise_verdict(pairs(0.05, 0.04, 0.06), [1.0, 2.0]) == "the spectral branch helps beyond seed noise"
    assert table.noise_verdict(pairs(-0.05, -0.04, -0.06), [1.0, 2.0]) == "the spectral branch hurts beyond seed noise"
    not_established = "a gain (or loss) beyond seed noise is not established"
    assert table.noise_verdict(pairs(0.05, 0.01, 0.06), [1.0, 2.0]) == not_established  # one interval reaches zero
    assert table.noise_verdict(pairs(0.05, 0.04, 0.06), [1.0, 6.0]) == not_established  # within a model's seed spread
    assert table.noise_verdict(pairs(0.05, 0.04, 0.06), [1.0]) == not_established  # one model has a single seed
    assert table.noise_verdict(pairs(-0.05, -0.04, -0.06), [1.0]) == not_established
    assert table.noise_verdict(pairs(-0.05, -0.04, -0.06), [6.0, 1.0]) == not_established


def test_results_table_pairs_rows_by_schedule_and_seed_and_seed_groups_join_a_models_seeds(table, tmp_path):
    # the seed a row shows is its config's: order by it, not by the folder name ("seed9" trained seed 3)
    for name, patience, seed in [("busi-s3f-concat", 4, 0), ("busi-baseline-lrpat40-seed9", 40, 3),
                                 ("busi-s3f-concat-lrpat40", 40, 0), ("busi-baseline-lrpat40", 40, 0),
                                 ("busi-baseline", 4, 0), ("busi-baseline-lrpat40-seed1", 40, 5)]:
        _fake_run(tmp_path / name, epochs_planned=25, epochs_done=25, history_rows=25, lr_patience=patience, seed=seed)
    rows = [line.split(" | ") for line in table.results_table(tmp_path, "busi").splitlines()[2:]]
    assert [(row[0], row[1], row[4]) for row in rows] == [("| baseline", "0", "4"), ("| s3f-concat", "0", "4"),
                                                          ("| baseline", "0", "40"), ("| s3f-concat", "0", "40"),
                                                          ("| baseline", "3", "40"), ("| baseline", "5", "40")]
    groups = table.busi_seed_groups(tmp_path)  # the preset's schedule only; a run without -seedN is seed 0
    assert {model: [s["seed"] for s in summaries] for model, summaries in groups.items()} == {
        "baseline": [0, 3, 5], "s3f-concat": [0]}


def test_the_reference_threshold_counts_only_the_default_recipe_and_both_minimums(table, tmp_path):
    for name, seed, accuracy, kappa in [("recipe-baseline-precise", 0, 0.57, 0.36),
                                        ("recipe-baseline-precise-seed1", 1, 0.61, 0.41),
                                        ("recipe-baseline-precise-seed2", 2, 0.66, 0.29),  # accuracy reached, kappa not
                                        ("recipe-baseline-precise-seed3", 3, 0.60, 0.30),  # both exactly at the minimum
                                        ("recipe-baseline-noweights-seed1", 1, 0.70, 0.50)]:  # another recipe
        _fake_run(tmp_path / name, epochs_planned=12, epochs_done=12, history_rows=12, seed=seed, accuracy=accuracy,
                  kappa=kappa)
    (tmp_path / "recipe-baseline-precise-seed4").mkdir()  # started, nothing written yet
    # resumed for more epochs: its metrics.json is the shorter run's
    _fake_run(tmp_path / "recipe-baseline-precise-seed5", epochs_planned=24, epochs_done=14, history_rows=14, seed=5)
    assert [s["seed"] for s in table.reference_runs(tmp_path)] == [0, 1, 2, 3]
    line = table.reference_line(tmp_path)
    assert "on 2 of 4 seeds (not seeds 0, 2), 4 of the 8 planned finished;" in line
    assert "default seed 0: 57.0%, κ 0.360" in line
    # the recipe comparison keeps to the seeds every recipe ran on; every fake run recalls 3 of 4 in each class
    assert ("| precise BatchNorm statistics (the default) | 3 | 61.3% ± 4.5% | 0.353 ± 0.060 | 0.600 ± 0.000 "
            "| 0.75 | 0.75 |" in table.recipe_seed_table(tmp_path))


def test_budget_table_groups_the_reference_command_by_epochs_with_recalls_and_the_threshold_per_seed(table, tmp_path):
    def run(name, seed, accuracy, kappa, epochs=12, done=None, matrix=((3, 1), (1, 3))):
        _fake_run(tmp_path / name, epochs_planned=epochs, epochs_done=done or epochs, history_rows=done or epochs,
                  seed=seed, accuracy=accuracy, kappa=kappa, confusion_matrix=matrix)

    run("recipe-baseline-precise", 0, 0.57, 0.36)
    run("recipe-baseline-precise-seed1", 1, 0.61, 0.41)
    run("budget-baseline-epochs24-seed0", 0, 0.64, 0.45, epochs=24, matrix=((1, 3), (1, 1)))  # recalls 0.25, 0.50
    run("budget-baseline-epochs24-seed1", 1, 0.66, 0.29, epochs=24, matrix=((4, 0), (1, 3)))  # recalls 1.00, 0.75
    run("budget-baseline-epochs24-seed2", 2, 0.70, 0.50, epochs=24, matrix=((3, 1), (0, 4)))  # recalls 0.75, 1.00
    run("budget-baseline-epochs48-seed0", 0, 0.90, 0.90, epochs=48, done=30)  # still training: not a row yet
    run("budget-baseline-epochs48-seed1", 1, 0.60, 0.31, epochs=48)  # finished, seed 0 is not; below its 12 epochs
    run("budget-baseline-epochs36-seed0", 0, 0.90, 0.90, epochs=36)  # not a budget of the study
    rows = table.budget_table(tmp_path).splitlines()[2:]
    assert len(rows) == 3
    assert rows[0].startswith("| 12 (the reference) | 0, 1 | ")
    assert rows[1].startswith("| 24 | 0, 1, 2 | 75.0% ± 0.0% | 66.7% ± 3.1% | 0.413 ± 0.110 | 0.67 | 0.75 | ")
    assert "| 1 of 2 seeds (not seed 0), 2 of the 8 planned finished | 57.0%, κ 0.360 | 57.0%, 61.0% | - |" in rows[0]
    # the change from 12 epochs pairs runs by seed: seed 0 +7, seed 1 +5; seed 2 has no 12-epoch run
    assert ("| 2 of 3 seeds (not seed 1), 3 of the 8 planned finished | 64.0%, κ 0.450 | 64.0%, 66.0%, 70.0% "
            "| +6.0 (2 of 2 higher) | 24–24 |") in rows[1]
    assert rows[2].startswith("| 48 | 1 | 75.0% | 60.0% | 0.310 | 0.75 | 0.75 | 1 of 1 seeds, 1 of the 8 planned "
                              "finished | - | 60.0% | -1.0 (0 of 1 higher) |")
    assert table.budget_line(tmp_path) == (
        "The same command trained longer, nothing else changed: 24 epochs, the threshold reached on 2 of 3 seeds "
        "(not seed 1), 3 of the 8 planned finished, test accuracy 66.7% ± 3.1%, seed 0 64.0% (κ 0.450); 48 epochs, the "
        "threshold reached on 1 of 1 seeds, 1 of the 8 planned finished.")
