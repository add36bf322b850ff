from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC


def build(c=1.0):
    return make_pipeline(StandardScaler(), SVC(C=c, gamma="scale"))


def train(X, y, c=1.0):
    clf = build(c)
    clf.fit(X, y)
    return clf


def evaluate(clf, X, y):
    return clf.score(X, y)
