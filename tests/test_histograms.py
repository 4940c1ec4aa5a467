"""One weighted histogram: weights, sums of squared weights, edge and NaN conventions, and
bit-for-bit agreement with the implementations each convention reproduces."""

import hist
import numpy as np
import pytest

from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram

EDGES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
VALUES = np.array([0.1, 0.25, 0.3, 1.0, 1.2, -0.1, 0.75])
WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])


def test_clip_counts_outside_values_in_the_end_bins():
    w, w2 = weighted_histogram(VALUES, WEIGHTS, EDGES, outside="clip")
    # bins are [lo, hi): 0.25 -> bin 1, 0.75 -> bin 3; -0.1 -> bin 0; 1.0 and 1.2 -> bin 3
    assert w.tolist() == [7.0, 5.0, 0.0, 16.0]
    assert w2.tolist() == [37.0, 13.0, 0.0, 90.0]


def test_drop_ignores_outside_values_and_closes_the_last_bin():
    w, w2 = weighted_histogram(VALUES, WEIGHTS, EDGES, outside="drop")
    assert w.tolist() == [1.0, 5.0, 0.0, 11.0]  # 1.0 on the upper edge is kept, 1.2 and -0.1 are not
    assert w2.tolist() == [1.0, 13.0, 0.0, 65.0]


def test_fold_has_the_counts_of_clip():
    a = weighted_histogram(VALUES, WEIGHTS, EDGES, outside="fold")
    b = weighted_histogram(VALUES, WEIGHTS, EDGES, outside="clip")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_no_weights_counts_entries():
    w, w2 = weighted_histogram(VALUES, None, EDGES)
    assert w.tolist() == [2.0, 2.0, 0.0, 3.0] and np.array_equal(w, w2)


def _random(seed=0, n=50000):
    rng = np.random.default_rng(seed)
    v = rng.normal(0.5, 0.4, n)  # plenty outside [0, 1]
    return v, rng.uniform(0.1, 2.0, n), np.linspace(0.0, 1.0, 21)


def test_cumulative_reproduces_np_histogram_bit_for_bit():
    v, w, e = _random()
    got = weighted_histogram(v, w, e, outside="drop", sums="cumulative")
    assert np.array_equal(got[0], np.histogram(v, e, weights=w)[0])
    assert np.array_equal(got[1], np.histogram(v, e, weights=w * w)[0])
    clipped = weighted_histogram(v, w, e, outside="clip", sums="cumulative")[0]
    assert np.array_equal(clipped, np.histogram(np.clip(v, 0, 1), e, weights=w)[0])


def test_unweighted_drop_counts_equal_np_histogram_on_a_range():
    """The pull histogram of hsaudit.stats.toys.gaussian_fit: counts of np.histogram(x, n,
    (lo, hi)), including values exactly on the edges and on hi."""
    rng = np.random.default_rng(4)
    x = np.r_[np.round(rng.normal(0, 2, 20000), 1), -5.0, 5.0, 5.2, -7.0]
    for lo, hi, n in ((-5, 5, 50), (-3.0, 3.0, 30), (-1, 1, 7)):
        got = weighted_histogram(x, None, np.linspace(lo, hi, n + 1), outside="drop", sums="cumulative")[0]
        ref = np.histogram(x, bins=n, range=(lo, hi))[0]
        assert got.dtype == np.float64 and np.array_equal(got, ref)


def test_in_order_sums_equal_cumulative_ones_up_to_rounding():
    v, w, e = _random(1)
    a = weighted_histogram(v, w, e, outside="drop")[0]
    b = weighted_histogram(v, w, e, outside="drop", sums="cumulative")[0]
    assert np.allclose(a, b, rtol=1e-12, atol=0)


def test_fold_reproduces_a_hist_histogram_with_folded_flow_bit_for_bit():
    v, w, e = _random(2)
    h = hist.Hist(hist.axis.Variable(e), storage=hist.storage.Weight())
    h.fill(v, weight=w)
    view = h.view(flow=True)
    ref_w, ref_w2 = np.array(view.value), np.array(view.variance)
    for a in (ref_w, ref_w2):
        a[1] += a[0]
        a[-2] += a[-1]
    got = weighted_histogram(v, w, e, outside="fold")
    assert np.array_equal(got[0], ref_w[1:-1]) and np.array_equal(got[1], ref_w2[1:-1])


def test_clip_reproduces_searchsorted_bincount_bit_for_bit():
    v, w, e = _random(3)
    idx = np.clip(np.searchsorted(e, v, side="right") - 1, 0, len(e) - 2)
    got = weighted_histogram(v, w, e)
    assert np.array_equal(got[0], np.bincount(idx, w, 20)) and np.array_equal(got[1], np.bincount(idx, w * w, 20))


def test_negative_weights_are_summed_not_dropped():
    w, w2 = weighted_histogram([0.1, 0.1, 0.6], [1.0, -0.25, 2.0], [0.0, 0.5, 1.0])
    assert w.tolist() == [0.75, 2.0] and w2.tolist() == [1.0625, 4.0]


def test_nonfinite_values_raise_or_are_dropped_with_their_weights():
    v = [0.1, np.nan, 0.6, np.inf]
    with pytest.raises(AuditError, match="scores: NaN or inf"):
        weighted_histogram(v, None, [0.0, 0.5, 1.0], what="scores")
    with pytest.raises(AuditError, match="NaN or inf"):
        weighted_histogram([0.1], [np.nan], [0.0, 1.0])
    w, w2 = weighted_histogram(v, [1.0, 10.0, 2.0, 20.0], [0.0, 0.5, 1.0], nonfinite="drop", outside="clip")
    assert w.tolist() == [1.0, 2.0] and w2.tolist() == [1.0, 4.0]


@pytest.mark.parametrize("edges", [[0.0], [0.0, 0.0, 1.0], [1.0, 0.0], [0.0, np.nan], [[0.0, 1.0]], None])
def test_bad_edges_are_an_audit_error(edges):
    with pytest.raises(AuditError, match="edges"):
        weighted_histogram([0.5], None, edges)


def test_bad_arguments_are_an_audit_error():
    with pytest.raises(AuditError, match="2 values but 1 weights"):
        weighted_histogram([0.1, 0.2], [1.0], EDGES)
    with pytest.raises(AuditError, match="outside='wrap'"):
        weighted_histogram([0.1], None, EDGES, outside="wrap")
    with pytest.raises(AuditError, match="fold"):
        weighted_histogram([0.1], None, EDGES, outside="fold", sums="cumulative")


def test_empty_input_gives_empty_bins():
    w, w2 = weighted_histogram([], [], EDGES)
    assert w.tolist() == [0.0] * 4 and w2.tolist() == [0.0] * 4
