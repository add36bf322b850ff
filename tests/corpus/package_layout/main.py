"""Train the digits classifier: python main.py"""
import argparse

from pkg.data import load_split
from pkg.model import evaluate, train


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--c", type=float, default=10.0)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    X_train, X_test, y_train, y_test = load_split()
    clf = train(X_train, y_train, c=args.c)
    print(f"test accuracy: {evaluate(clf, X_test, y_test):.4f}")
