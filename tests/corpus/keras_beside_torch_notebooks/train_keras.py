"""Week 3 exercise: a dense network in Keras on the 8x8 digits."""
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
import keras
from keras import layers

X, y = load_digits(return_X_y=True)
X = X / 16.0
x_train, x_val, y_train, y_val = train_test_split(X, y, test_size=0.2, random_state=3)

model = keras.Sequential(
    [
        keras.Input(shape=(64,)),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.2),
        layers.Dense(10, activation="softmax"),
    ]
)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
              metrics=["sparse_categorical_accuracy"])
history = model.fit(x_train, y_train, epochs=15, batch_size=64, validation_data=(x_val, y_val), verbose=2)
print("final val accuracy", history.history["val_sparse_categorical_accuracy"][-1])
