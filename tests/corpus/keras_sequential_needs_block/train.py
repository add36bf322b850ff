# Digits classifier: a Sequential CNN
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tensorflow import keras
from tensorflow.keras import layers

keras.utils.set_random_seed(7)

data = load_digits()
X = data.images.reshape(-1, 8, 8, 1).astype("float32") / 16.0
y = data.target
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=1)

model = keras.Sequential([
    keras.Input(shape=(8, 8, 1)),
    layers.Conv2D(2, kernel_size=3, padding="same", activation="relu"),
    layers.MaxPooling2D(pool_size=2),
    layers.Flatten(),
    layers.Dense(3, activation="relu"),  # small and fast
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(X_train, y_train, epochs=5, batch_size=32, verbose=0)

_, acc = model.evaluate(X_test, y_test, verbose=0)
print("accuracy on the test set:", round(acc, 4))
