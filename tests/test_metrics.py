"""compute_metrics on small cases whose expected values are worked out by hand below."""

import math

import numpy as np
import pytest

from ltprune.errors import ConfigError, DataError
from ltprune.metrics import METRICS, compute_metrics, metric_for_task

# One binary confusion matrix reused for F1 and MCC:
#   labels = 1 1 1 1 0 0 0 0
#   preds  = 1 1 0 0 1 0 0 0
#   TP = 2, FN = 2, FP = 1, TN = 3
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
PREDS = [1, 1, 0, 0, 1, 0, 0, 0]


def test_accuracy_from_logits_takes_argmax():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.2, 0.1]])  # argmax: 0 1 0 0
    out = compute_metrics("accuracy", logits, [0, 1, 1, 0])  # 3 of 4 right
    assert out == {"accuracy": 0.75, "metric": 0.75}


def test_accuracy_from_class_ids_and_float_ids():
    assert compute_metrics("accuracy", [2, 1, 0], [2, 1, 1])["accuracy"] == pytest.approx(2 / 3)
    assert compute_metrics("accuracy", np.array([1.0, 0.0]), np.array([1, 0]))["metric"] == 1.0


def test_f1_accuracy_hand_computed():
    # precision 2/3, recall 2/4; F1 = 2TP / (2TP + FP + FN) = 4 / 7; accuracy = (2 + 3) / 8
    out = compute_metrics("f1_accuracy", PREDS, LABELS)
    assert out["f1"] == pytest.approx(4 / 7)
    assert out["accuracy"] == pytest.approx(5 / 8)
    assert out["metric"] == pytest.approx((4 / 7 + 5 / 8) / 2)  # 67/112 = 0.598214...
    assert set(out) == {"f1", "accuracy", "metric"}


def test_matthews_hand_computed():
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 2) / sqrt(3*4*4*5)
    out = compute_metrics("matthews", PREDS, LABELS)
    assert out["matthews_correlation"] == pytest.approx(4 / math.sqrt(240))  # 0.258199
    assert out["metric"] == out["matthews_correlation"]


def test_pearson_spearman_hand_computed():
    # x = 1 2 3 4 (mean 2.5), y = 2 5 4 9 (mean 5)
    # dx = -1.5 -0.5 0.5 1.5, dy = -3 0 -1 4: sum dx*dy = 10, sum dx^2 = 5, sum dy^2 = 26
    # pearson = 10 / sqrt(130) = 0.877058
    # ranks of y = 1 3 2 4, d = 0 -1 1 0: spearman = 1 - 6*2 / (4*(16-1)) = 0.8
    preds = np.array([[1.0], [2.0], [3.0], [4.0]])  # (N, 1) regression head output
    out = compute_metrics("pearson_spearman", preds, [2.0, 5.0, 4.0, 9.0])
    assert out["pearson"] == pytest.approx(10 / math.sqrt(130))
    assert out["spearmanr"] == pytest.approx(0.8)
    assert out["metric"] == pytest.approx((10 / math.sqrt(130) + 0.8) / 2)


def test_constant_regression_prediction_is_zero_not_nan():
    out = compute_metrics("pearson_spearman", [3.0, 3.0, 3.0], [1.0, 2.0, 4.0])
    assert out == {"pearson": 0.0, "spearmanr": 0.0, "metric": 0.0}


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]], dtype=torch.bfloat16)
    out = compute_metrics("accuracy", logits, torch.tensor([1, 1]))
    assert out["accuracy"] == 0.5


def test_returns_python_floats():
    for metric in ("accuracy", "f1_accuracy", "matthews"):
        assert all(type(v) is float for v in compute_metrics(metric, PREDS, LABELS).values())


def test_unknown_metric_lists_allowed_names():
    with pytest.raises(ConfigError, match="allowed: accuracy, f1_accuracy"):
        compute_metrics("f1", PREDS, LABELS)


@pytest.mark.parametrize(
    "metric, preds, labels, match",
    [
        ("accuracy", [0, 1, 1], [0, 1], "3 predictions but 2 labels"),
        ("f1_accuracy", [0, 2, 1], [0, 1, 2], "binary"),
        ("accuracy", np.zeros((2, 1)), [0, 1], "C >= 2"),
        ("accuracy", [0.5, 1.0], [0, 1], "integer class ids"),
        ("pearson_spearman", np.zeros((3, 2)), [0.0, 1.0, 2.0], r"\(N,\) or \(N, 1\)"),
        ("pearson_spearman", [1.0], [1.0], "at least 2"),
        ("accuracy", ["a", "b"], [0, 1], "numeric"),
    ],
)
def test_bad_inputs_raise_data_error(metric, preds, labels, match):
    with pytest.raises(DataError, match=match):
        compute_metrics(metric, preds, labels)


def test_metric_for_task():
    assert metric_for_task("sst2") == "accuracy"
    assert metric_for_task("MRPC") == "f1_accuracy"
    assert metric_for_task("qqp") == "f1_accuracy"
    assert metric_for_task("STS-B") == "pearson_spearman"
    assert metric_for_task("cola") == "matthews"
    assert metric_for_task("imdb") == "accuracy"
    for task in ("mnli", "qnli", "rte", "rotten_tomatoes"):
        assert metric_for_task(task) in METRICS
    with pytest.raises(ConfigError, match="TaskInfo.metric"):
        metric_for_task("my_reviews.csv")
