"""Grid search over a small Keras network, wrapped as a scikit-learn classifier."""
import numpy as np
import keras
from keras import layers
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split


class KerasDigits(ClassifierMixin, BaseEstimator):
    def __init__(self, units=32, epochs=20, batch_size=32):
        self.units = units
        self.epochs = epochs
        self.batch_size = batch_size

    def _build(self, n_features, n_classes):
        model = keras.Sequential([
            keras.Input(shape=(n_features,)),
            layers.Dense(self.units, activation="relu"),
            layers.Dropout(0.1),
            layers.Dense(self.units, activation="relu"),
            layers.Dense(n_classes, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(5e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])
        return model

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.model_ = self._build(X.shape[1], len(self.classes_))
        self.model_.fit(X, y, epochs=self.epochs, batch_size=self.batch_size, verbose=0)
        return self

    def predict(self, X):
        return self.classes_[np.argmax(self.model_.predict(X, verbose=0), axis=1)]


X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.25, random_state=7)

grid = GridSearchCV(KerasDigits(), {"units": [16, 48]}, cv=2)
grid.fit(X_train, y_train)
print("best params:", grid.best_params_)
print("test accuracy:", grid.score(X_test, y_test))
