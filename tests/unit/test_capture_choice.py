"""Which captured metric gates (pure), what the host reads of provenance.json (pure), and how the
summary and the email show where the metric came from."""

from __future__ import annotations

import json

from mlchain.capture import HELD_OUT, SDK_REPORT, TRAINING, VALIDATION, Observation, choose, metric_name
from mlchain.provenance import parse_provenance


def seen(name: str, value: float, kind: str, call: str = "m.evaluate(x_test, y_test)", where: str = "t.py:9",
         ) -> Observation:
    return Observation(name, value, kind, call, where)


def test_held_out_beats_validation_and_the_last_held_out_evaluation_wins() -> None:
    observations = [
        seen("accuracy", 0.99, TRAINING, "m.score(X_train, y_train)", "t.py:5"),
        seen("accuracy", 0.91, VALIDATION, "the last epoch's val_accuracy of m.fit(...)", "t.py:6"),
        seen("loss", 0.40, HELD_OUT, "m.evaluate(x_test, y_test)", "t.py:7"),
        seen("accuracy", 0.88, HELD_OUT, "m.evaluate(x_test, y_test)", "t.py:7"),
        seen("loss", 0.30, HELD_OUT, "m.evaluate(x_hold, y_hold)", "t.py:8"),
        seen("accuracy", 0.90, HELD_OUT, "m.evaluate(x_hold, y_hold)", "t.py:8"),
    ]
    choice = choose(observations, "accuracy")
    assert choice.observation is observations[-1]
    assert choice.metrics == {"accuracy": 0.90, "loss": 0.30}  # that call's metrics, not the others'
    assert choice.observation.describe() == "accuracy 0.9 from m.evaluate(x_hold, y_hold) at t.py:8"


def test_validation_metrics_count_when_nothing_was_evaluated_on_held_out_data() -> None:
    observations = [seen("accuracy", 0.97, TRAINING), seen("accuracy", 0.93, VALIDATION, "fit", "t.py:3")]
    choice = choose(observations, "accuracy")
    assert choice.observation is observations[1] and choice.metrics == {"accuracy": 0.93}


def test_training_set_metrics_never_count_and_the_failure_says_what_to_add() -> None:
    observations = [seen("accuracy", 1.0, TRAINING, "clf.score(X_train, y_train)", "fit.py:9"),
                    seen("f1", 0.7, HELD_OUT, "f1_score(y_test, p)", "fit.py:10")]
    choice = choose(observations, "accuracy")
    assert choice.observation is None and choice.metrics == {}
    assert choice.problem is not None
    assert "found only training-set accuracy (accuracy 1 from clf.score(X_train, y_train) at fit.py:9)," \
           " which never counts" in choice.problem
    assert "found held-out or validation metrics other than accuracy: f1" in choice.problem
    assert choice.problem.endswith("sdk.report({'accuracy': <accuracy on held-out data>})")


def test_an_sdk_report_is_not_a_captured_metric() -> None:
    choice = choose([seen("accuracy", 0.5, SDK_REPORT)], "accuracy")
    assert choice.observation is None  # mlchain-train reads metrics.json for it instead


def test_keras_names_of_accuracy_are_the_gate_s_accuracy() -> None:
    assert [metric_name(n) for n in ("acc", "sparse_categorical_accuracy", "binary_accuracy", "loss", "auc")] \
        == ["accuracy", "accuracy", "accuracy", "loss", "auc"]


def test_the_host_keeps_only_known_keys_of_the_right_type_within_bounds() -> None:
    written = {"metric": "accuracy", "value": 0.93, "source": "held-out", "call": "m.evaluate(x, y)",
               "where": "t.py:4", "text": "x" * 5000, "model": ["not", "a", "string"], "model_files": ["a.h5", 3],
               "extra": "dropped"}
    parsed = parse_provenance(json.dumps(written))
    assert parsed == {"metric": "accuracy", "value": 0.93, "source": "held-out", "call": "m.evaluate(x, y)",
                      "where": "t.py:4", "text": "x" * 2000, "model_files": ["a.h5"]}
    assert parse_provenance("[1, 2]") is None
    assert parse_provenance("{not json") is None
    assert parse_provenance('{"value": true}') == {}
