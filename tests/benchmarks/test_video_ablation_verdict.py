"""The ablation's verdict: each of the papers' orderings is tested on the folds both of its rows finished."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks.video_ablation import _verdict  # noqa: E402


def row(per_fold, folds=None):
    folds = list(range(len(per_fold))) if folds is None else folds
    return {"video_mean": sum(per_fold) / len(per_fold), "per_fold_video": per_fold, "folds": folds}


def line(text, pair):
    return next(ln for ln in text.splitlines() if ln.startswith(f"- {pair}:"))


def test_a_consistent_paired_difference_holds_and_its_opposite_is_reversed():
    results = {"convgru": row([0.60, 0.55, 0.65, 0.58, 0.62]), "convlstm": row([0.50, 0.47, 0.52, 0.49, 0.51]),
               "econvgru": row([0.40, 0.35, 0.45, 0.38, 0.42])}
    text = _verdict(results)
    assert "holds" in line(text, "convgru > convlstm") and "better in 5 of 5 folds" in line(text, "convgru > convlstm")
    assert "reversed" in line(text, "econvgru > convgru")


def test_orderings_use_only_the_folds_both_rows_finished():
    # convlstm finished folds 0-4, convgru only 0-1: the pair is judged on folds 0 and 1 (+10 points in each).
    results = {"convgru": row([0.60, 0.60], [0, 1]), "convlstm": row([0.50, 0.50, 0.90, 0.90, 0.90])}
    text = _verdict(results)
    assert "better in 2 of 2 folds" in line(text, "convgru > convlstm")
    assert "+10.0" in line(text, "convgru > convlstm")


def test_a_single_common_fold_tests_nothing():
    results = {"convgru": row([0.60]), "convlstm": row([0.50, 0.40])}
    assert "not tested (only 1 common fold" in line(_verdict(results), "convgru > convlstm")


def test_a_noisy_difference_is_not_resolved():
    results = {"convgru": row([0.60, 0.40, 0.62, 0.38]), "convlstm": row([0.50, 0.50, 0.50, 0.50])}
    assert "not resolved" in line(_verdict(results), "convgru > convlstm")
