from __future__ import annotations

import math

import numpy as np

from fedmm.metrics import hit_ndcg, leave_one_out_metrics, target_rank


def test_rank_full_excludes_training_items():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    # target 3: ahead are 0,1,2; excluding 0 and 2 leaves rank 1
    assert target_rank(scores, 3) == 3
    assert target_rank(scores, 3, exclude=np.array([0, 2])) == 1


def test_rank_ties_are_pessimistic():
    scores = np.zeros(10)
    assert target_rank(scores, 4) == 9
    assert target_rank(scores, 4, candidates=np.array([1, 2, 3])) == 3


def test_rank_sampled_counts_only_candidates():
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.95])
    assert target_rank(scores, 2, candidates=np.array([0, 3, 4])) == 1


def test_hit_ndcg_hand_values():
    m = hit_ndcg(0, [1, 5])
    assert m == {"hr@1": 1.0, "ndcg@1": 1.0, "hr@5": 1.0, "ndcg@5": 1.0}
    m = hit_ndcg(2, [2, 5])
    assert m["hr@2"] == 0.0 and m["ndcg@2"] == 0.0
    assert m["hr@5"] == 1.0 and math.isclose(m["ndcg@5"], 1 / math.log2(4))


def test_leave_one_out_metrics_by_hand():
    # 6 items; train {0}; valid 1; test 2; negatives {3, 4}
    scores = np.array([10.0, 5.0, 1.0, 6.0, 0.5, 7.0])
    m = leave_one_out_metrics(scores, np.array([0]), 1, 2, np.array([3, 4]), [1, 3], ["full", "sampled"])
    # full valid: ahead of 5.0 among {2,3,4,5} -> 3 and 5 => rank 2
    assert m["valid_full_hr@1"] == 0.0 and m["valid_full_hr@3"] == 1.0
    assert math.isclose(m["valid_full_ndcg@3"], 1 / math.log2(4))
    # full test (1.0) excludes train 0 and valid 1: ahead 3, 5 => rank 2 (4 scores 0.5)
    assert m["test_full_hr@3"] == 1.0 and math.isclose(m["test_full_ndcg@3"], 0.5)
    # sampled valid: among {3 (6.0), 4 (0.5)} -> rank 1
    assert m["valid_sampled_hr@1"] == 0.0 and math.isclose(m["valid_sampled_ndcg@3"], 1 / math.log2(3))
    # sampled test: 1.0 vs 6.0, 0.5 -> rank 1
    assert m["test_sampled_hr@3"] == 1.0


def test_nan_scores_never_count_as_hits():
    """A diverged model (NaN scores) gets the worst rank, not the best."""
    import numpy as np

    from fedmm.metrics import target_rank

    scores = np.array([np.nan, 1.0, np.nan, 0.5])
    assert target_rank(scores, 0, candidates=np.array([1, 2, 3])) == 3
    assert target_rank(scores, 1, candidates=np.array([0, 2, 3])) == 2  # NaNs ahead, 0.5 behind
    assert target_rank(scores, 0) == 3
    assert target_rank(scores, 3, exclude=np.array([1])) == 2
