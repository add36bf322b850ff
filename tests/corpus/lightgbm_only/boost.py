import lightgbm as lgb
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
clf = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05)
clf.fit(X_train, y_train)
print("accuracy", accuracy_score(y_test, clf.predict(X_test)))
