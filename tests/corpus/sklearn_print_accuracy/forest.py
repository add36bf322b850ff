"""Random forest on the digits dataset."""
import joblib
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=42)

    clf = RandomForestClassifier(n_estimators=60, max_depth=12, random_state=42)
    clf.fit(X_train, y_train)

    print("train accuracy:", accuracy_score(y_train, clf.predict(X_train)))
    print("test accuracy:", accuracy_score(y_test, clf.predict(X_test)))
    joblib.dump(clf, "forest.joblib")


if __name__ == "__main__":
    main()
