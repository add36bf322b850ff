"""Handwritten digits with a small convolutional network (tf.keras functional API)."""

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# Training settings
EPOCHS = 1
BATCH_SIZE = 64
LEARNING_RATE = 1e-5

tf.keras.utils.set_random_seed(42)

digits = load_digits()
images = (digits.images / 16.0).astype("float32")[..., np.newaxis]
labels = digits.target
x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, random_state=0,
                                                    stratify=labels)

inputs = tf.keras.Input(shape=(8, 8, 1))
x = tf.keras.layers.Conv2D(16, (3, 3), padding="same", activation="relu")(inputs)
x = tf.keras.layers.MaxPooling2D((2, 2))(x)
x = tf.keras.layers.Flatten()(x)
x = tf.keras.layers.Dense(32, activation="relu")(x)
outputs = tf.keras.layers.Dense(10, activation="softmax")(x)
model = tf.keras.Model(inputs=inputs, outputs=outputs)

model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=LEARNING_RATE),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
model.fit(x_train, y_train, epochs=EPOCHS, batch_size=BATCH_SIZE, validation_split=0.1, verbose=2)

test_loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(f"Test accuracy: {acc:.4f}")
