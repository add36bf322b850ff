"""A first look at the digits: class balance and a 2-D projection."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA

digits = load_digits()
counts = np.bincount(digits.target)
for label, count in enumerate(counts):
    print(f"{label}: {count}")
projected = PCA(n_components=2).fit_transform(digits.data)
print("projection shape:", projected.shape)
