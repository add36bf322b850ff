"""A small CNN on scikit-learn's bundled digits (8x8 images), every part of it a parameter."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mlchain import sdk


def build_model(p: dict) -> keras.Model:
    model = keras.Sequential([keras.Input(shape=(8, 8, 1))])
    filters = int(p["filters"])
    for _ in range(int(p["conv_blocks"])):
        model.add(layers.Conv2D(filters, int(p["kernel_size"]), padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(pool_size=2, padding="same"))
        filters *= 2
    model.add(layers.Flatten())
    model.add(layers.Dense(int(p["dense_units"]), activation="relu"))
    model.add(layers.Dropout(float(p["dropout"])))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(float(p["learning_rate"])),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> None:
    p = sdk.params()
    keras.utils.set_random_seed(int(p.get("seed", 0)))
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    y = digits.target
    sdk.record_data(x, y, source="sklearn.datasets.load_digits")
    # The gate metric comes from the held-out quarter, never seen in training.
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    model = build_model(p)
    model.fit(x_train, y_train, validation_split=0.1, epochs=int(p["epochs"]),
              batch_size=int(p["batch_size"]), verbose=0, callbacks=sdk.keras_callbacks())
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    sdk.report({"accuracy": accuracy, "test_loss": loss})
    sdk.save_model(model)


if __name__ == "__main__":
    main()
