"""The convergence rule the tables mark (common.convergence) and the CSV columns that carry it."""
import pytest

from common.convergence import FLAT_TOL, dev_scores, late_gain, of_record, still_rising


def test_late_gain_is_the_rise_of_the_best_score_over_the_last_quarter():
    assert late_gain([50, 70, 80, 80.2]) == pytest.approx(0.2)  # best of first 3 = 80
    assert late_gain([50, 60, 70, 80, 82, 83, 84, 86]) == pytest.approx(86 - 83)  # first 6 of 8
    assert late_gain([90, 80, 85, 84]) == 0.0  # the best came early: no late gain
    assert late_gain([70, 71]) == pytest.approx(1.0)  # two evaluations: the last against the first
    assert late_gain([70]) is None


@pytest.mark.parametrize("best_is_last,gain,expected", [
    (True, FLAT_TOL + 0.1, True), (True, FLAT_TOL - 0.1, False), (False, 5.0, False), (True, None, True),
    (None, None, False)])
def test_still_rising_needs_the_best_last_and_a_late_gain(best_is_last, gain, expected):
    assert still_rising(best_is_last, gain) is expected


def test_of_record_reads_single_and_multi_task_histories():
    one = {"task": "stsb", "still_improving": True,
           "history": [{"step": i, "dev": {"pearson": v, "spearman": 0.0}} for i, v in enumerate([80, 85, 88, 88.1])]}
    best_last, gain, rising = of_record(one)
    assert best_last is True and gain == pytest.approx(0.1) and rising is False  # flat: not marked
    one["history"][-1]["dev"]["pearson"] = 90.0
    assert of_record(one)[2] is True
    multi = {"task": "mt", "still_improving": True, "history": [{"step": 1, "dev_mean": 40}, {"step": 2, "dev_mean": 45}]}
    assert dev_scores(multi["history"], None) == [40, 45] and of_record(multi) == (True, 5.0, True)


def test_csv_keeps_the_records_flag_and_marks_only_rising_runs():
    from common.aggregate import to_frame

    def rec(run_id, curve):
        return {"task": "stsb", "method": "lora", "seed": 2, "config": {"method": {"lr": 1e-3}}, "run_id": run_id,
                "final": {"test": {"pearson": curve[-1]}}, "still_improving": curve[-1] == max(curve),
                "history": [{"step": i, "dev": {"pearson": v}} for i, v in enumerate(curve)],
                "trainable_params": 1, "total_params": 2, "model": "m", "scale": "small", "git": {"commit": "abc"}}

    df = to_frame([rec("flat", [80, 86, 88, 88.2]), rec("rising", [60, 70, 75, 80]), rec("early", [80, 88, 86, 85])])
    got = df.set_index("run_id")[["best_is_last", "still_improving"]].to_dict("index")
    assert got == {"flat": {"best_is_last": True, "still_improving": False},
                   "rising": {"best_is_last": True, "still_improving": True},
                   "early": {"best_is_last": False, "still_improving": False}}
