"""A multi-layer perceptron (scikit-learn) on the bundled digits, trained epoch by epoch.

Each epoch ends with a checkpoint (``sdk.checkpoint``), so a trial that was killed, ran
out of memory or hung is restarted by the monitor from its last epoch (``sdk.resume``).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from mlchain import sdk


def main() -> None:
    p = sdk.params()
    digits = load_digits()
    x, y = digits.data.astype("float64"), digits.target
    sdk.record_data(x, y, source="sklearn.datasets.load_digits")
    # The gate metric comes from the held-out quarter, never seen in training.
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    classes = np.unique(y)
    seed = int(p.get("seed", 0))
    epochs = int(p["epochs"])

    def make_model() -> MLPClassifier:
        return MLPClassifier(hidden_layer_sizes=(int(p["hidden_units"]),) * int(p["hidden_layers"]),
                             alpha=float(p["alpha"]), learning_rate_init=float(p["learning_rate"]),
                             batch_size=int(p["batch_size"]), random_state=seed)

    # The last checkpoint of this trial (after a restart), else a new model and epoch 0.
    model, done = sdk.resume(make_model)
    for epoch in range(done + 1, epochs + 1):
        # Seeded per epoch: a resumed run shuffles exactly as an uninterrupted one would.
        order = np.random.default_rng([seed, epoch]).permutation(len(x_train))
        model.partial_fit(x_train[order], y_train[order], classes=classes)
        sdk.checkpoint(model, epoch)
        sdk.log_epoch(epoch, epochs, loss=model.loss_,
                      train_accuracy=accuracy_score(y_train, model.predict(x_train)))
    sdk.report({"accuracy": accuracy_score(y_test, model.predict(x_test))})
    sdk.save_model(model)


if __name__ == "__main__":
    main()
