"""The task seam and the experiment runner's points store (issue 16, second pass)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

import ltprune
from conftest import random_batch, tiny_model
from ltprune import evaluation
from ltprune.data import TaskInfo
from ltprune.errors import LTPError
from ltprune.experiments.runner import PointStore
from ltprune.tasks.base import Task
from ltprune.tasks.classification import ClassificationTask, as_task
from ltprune.tasks.squad import SquadTask

INFO = TaskInfo(name="tiny", num_labels=2, is_regression=False, metric="accuracy", has_pair=False, label_names=None)


def _split(lengths=(9, 3, 14, 6, 11, 4)):
    ids, mask = random_batch(list(lengths), seed=3)
    rows = {"input_ids": [i[:n].tolist() for i, n in zip(ids, lengths)],
            "attention_mask": [m[:n].tolist() for m, n in zip(mask, lengths)],
            "label": [i % 2 for i in range(len(lengths))]}
    return datasets.Dataset.from_dict(rows)


def test_a_task_info_is_its_classification_task():
    task = as_task(INFO)
    assert isinstance(task, ClassificationTask) and task.info is INFO and task.name == "tiny"
    squad = SquadTask()
    assert as_task(squad) is squad and isinstance(squad, Task)
    assert as_task(None) is None


def test_evaluate_through_the_task_is_evaluate_through_its_info():
    model = ltprune.patch(tiny_model("bert", num_labels=2), ltprune.LTPConfig(final_threshold=0.05, mode="hard"))
    split = _split()
    by_info = evaluation.evaluate(model, split, INFO, pad_id=0, batch_size=2)
    by_task = evaluation.evaluate(model, split, ClassificationTask(INFO), pad_id=0, batch_size=4)
    public = {k: v for k, v in by_info.items() if not k.startswith("_")}
    assert public.keys() == {k for k in by_task if not k.startswith("_")}
    for key, value in public.items():  # (token counts are integers: batching cannot change them)
        assert by_task[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    assert public["num_examples"] == 6 and 0 < public["relative_flops"] <= 1
    # one pass, length-sorted batches, results back in dataset order: each row as if alone
    outputs, pred = ClassificationTask(INFO).predict(model, split, pad_id=0, batch_size=3)
    for i in range(len(split)):
        alone, single = ClassificationTask(INFO).predict(model, split.select([i]), pad_id=0, batch_size=1)
        np.testing.assert_allclose(outputs[i], alone[0], atol=1e-5)
        assert pred.lengths[i] == single.lengths[0] == len(split[i]["input_ids"])
        assert (pred.tokens_kept[i] == single.tokens_kept[0]).all()


def test_the_points_store_keeps_one_row_per_task_method_and_knob(tmp_path):
    store = PointStore(tmp_path / "points.json")
    assert store.rows() == [] and store.find("ltp", 0.1, "t") is None
    store.add({"task": "t", "method": "ltp", "knob": 0.1, "metric": 0.5})
    store.add({"task": "t", "method": "ltp", "knob": 0.2, "metric": 0.6})
    store.add({"task": "u", "method": "ltp", "knob": 0.1, "metric": 0.7})
    store.add({"task": "t", "method": "ltp", "knob": 0.1 + 1e-12, "metric": 0.8})  # the same knob: replaced
    assert [(p["task"], p["knob"], p["metric"]) for p in store.rows()] == \
        [("t", 0.2, 0.6), ("u", 0.1, 0.7), ("t", 0.1 + 1e-12, 0.8)]
    assert store.find("ltp", 0.1, "t")["metric"] == 0.8 and store.find("ltp", 0.1, "v") is None
    rows = PointStore(tmp_path / "robustness.json", rows_key="rows")  # rows without a task, with a header
    rows.add({"method": "unpruned", "knob": None, "buckets": {}}, header={"task": "t", "q2": 7.0})
    rows.add({"method": "ltp", "knob": 0.1, "buckets": {}}, header={"task": "t", "q2": 7.0})
    assert rows.read()["q2"] == 7.0 and rows.find("unpruned", None) is not None
    assert [r["method"] for r in rows.rows()] == ["unpruned", "ltp"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LTPError, match="bad.json: unreadable JSON"):
        PointStore(tmp_path / "bad.json").rows()
