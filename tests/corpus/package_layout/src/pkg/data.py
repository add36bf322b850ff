from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load_split(test_size=0.3, seed=0):
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=test_size, random_state=seed)
