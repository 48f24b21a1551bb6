"""Table 3's orderings over repeated trainings: a difference counts only beyond twice its standard error."""
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks.vae_swap_table3 import _ordering_lines_over_trainings, _over_trainings  # noqa: E402


def entry(train, test=None):
    return {"kmeans_train": {"mean": train, "std": 0.01}, "kmeans_test": {"mean": test, "std": 0.01} if test is not None else None}


def line(lines, pair):
    return next(ln for ln in lines if ln.startswith(f"- {pair} ("))


def test_mean_and_sample_std_over_the_table_run_and_its_repeats():
    rows = {"row1_two_stage": entry(0.20, 0.30), "row6_vae": entry(0.14)}
    repeats = {"row1_two_stage": [(1, entry(0.22, 0.32)), (2, entry(0.24, 0.28))]}
    train = _over_trainings(rows, repeats, "kmeans_train")
    assert set(train) == {"row1_two_stage"}  # row6 was trained once: no spread to report
    mean, std, n = train["row1_two_stage"]
    assert n == 3 and mean == pytest.approx(0.22) and std == pytest.approx(0.02)  # sample std (ddof 1)
    assert _over_trainings(rows, repeats, "kmeans_test")["row1_two_stage"][0] == pytest.approx(0.30)


def test_orderings_hold_reverse_or_stay_unresolved_against_the_standard_error():
    spread = {"kmeans_test": {"row2_gan": (0.30, 0.01, 3), "row1_two_stage": (0.20, 0.01, 3),
                              "row3_gan_switch": (0.31, 0.05, 3), "row4_iterated": (0.10, 0.01, 3)},
              "kmeans_train": {}}
    lines = _ordering_lines_over_trainings({}, spread)
    assert "holds" in line(lines, "row2_gan > row1_two_stage")  # +10 points, standard error 0.8
    assert "not resolved" in line(lines, "row3_gan_switch > row2_gan")  # +1 point, standard error 2.9
    assert "reversed" in line(lines, "row4_iterated > row3_gan_switch")  # -21 points, standard error 2.9
    assert not any(ln.startswith("- row1_two_stage > row6_vae") for ln in lines)  # row6 not repeated: not judged here
