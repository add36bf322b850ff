"""mlchain's Keras callbacks, each a small class with one job (``sdk.keras_callbacks()`` makes
them): checkpoint and restore, and one progress line per epoch.

Imported only by training code that uses Keras (this module imports keras at the top). The sdk
hands in what they write with (its checkpoint folder, its log), so this module sits above it
without importing it back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from mlchain.sdk import CheckpointFolder, CheckpointInfo

WEIGHTS_FILE = "model.weights.h5"


class CheckpointAndRestore(keras.callbacks.Callback):
    """Keras' ``BackupAndRestore``, made safe against kills: each epoch's weights are written
    atomically beside the previous epoch's (a backup), in a folder keyed by the params (a
    tweaked architecture never loads another's weights); at the start of ``fit`` the newest
    checkpoint that loads is restored, and training goes on from its epoch. When none loads,
    or the model is not built yet (its weights have no shape to load into), training starts
    from scratch and the log says why."""

    def __init__(self, folder: CheckpointFolder, params_hash: str, say: Callable[[str], None]) -> None:
        super().__init__()
        self.folder = folder
        self.params_hash = params_hash
        self.say = say

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if not self.folder.checkpoints():
            return
        if not self.model.built:
            self.say("keras model: not built before fit (no input shape), so its checkpoint cannot be loaded;"
                " training from scratch (give the model a keras.Input to resume after a restart)")
            return
        loaded = self.folder.load(self._load_weights, "keras model", self.params_hash)
        if loaded is not None:
            epoch = loaded[0]
            _start_fit_at(self.model, epoch)
            self.say(f"keras model: resuming from the checkpoint of epoch {epoch}")

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if isinstance(getattr(self.model, "_training_state", None), _StartAt):
            self.model._training_state = None  # a later fit() starts where its caller says

    def _load_weights(self, info: CheckpointInfo) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        # Keras 3 says `built`; Keras 2's optimizers keep `_built` (its state is in the checkpoint too)
        built = getattr(optimizer, "built", None) if optimizer is not None else True
        if built is None:
            built = getattr(optimizer, "_built", False)
        if optimizer is not None and not built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(str(info.path / WEIGHTS_FILE))
        return info.epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        model = self.model
        self.folder.write(epoch + 1, {"framework": "keras", "estimator": type(model).__name__,
                                      "params_hash": self.params_hash, "resumable": True},
                          lambda folder: model.save_weights(str(folder / WEIGHTS_FILE)))


class _StartAt:
    """Keras 2's fit() asks its model's ``_training_state`` (set by BackupAndRestore) where to start."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def maybe_load_initial_counters_from_ckpt(self, steps_per_epoch: int, initial_epoch: int,
                                              mode: object = None) -> tuple[int, int]:
        return self.epoch, 0


def _start_fit_at(model: Any, epoch: int) -> None:
    """Make the fit() that is starting begin at ``epoch``. Neither Keras has a public setter;
    their own BackupAndRestore does the same. tests/unit/test_sdk_checkpoints.py pins Keras 3's."""
    if hasattr(model, "_maybe_load_initial_counters_from_ckpt"):  # Keras 2 (tf.keras 2.11-2.15)
        model._training_state = _StartAt(epoch)
    else:
        model._initial_epoch = epoch


class ProgressLines(keras.callbacks.Callback):
    """One mlchain progress line per epoch, which job3 and the monitor follow."""

    def __init__(self, log_epoch: Callable[..., None]) -> None:
        super().__init__()
        self.log_epoch = log_epoch

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        epochs = self.params.get("epochs") if isinstance(self.params, dict) else None
        self.log_epoch(epoch + 1, epochs, **dict(logs or {}))
