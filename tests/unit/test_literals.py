"""The hyperparameter literals of training code: found on in-memory sources, rewritten losslessly."""

from __future__ import annotations

import ast

from mlchain import literals, tweak

FUNCTIONAL = '''import keras
from keras import layers

EPOCHS = 1  # one pass is not enough
LEARNING_RATE = 1e-6


def build():
    inputs = keras.Input(shape=(8, 8, 1))
    x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss="sparse_categorical_crossentropy")
    return model


model = build()
model.fit(x_train, y_train, epochs=EPOCHS, batch_size=32)
'''

SEQUENTIAL = '''from tensorflow import keras

model = keras.Sequential([
    keras.layers.Conv2D(4, 3, activation="relu", input_shape=(8, 8, 1)),  # the only block
    keras.layers.MaxPooling2D(),
    keras.layers.Flatten(),
    keras.layers.Dense(8, activation="relu"),
    keras.layers.Dense(10),
])
model.compile(optimizer=keras.optimizers.SGD(0.01), loss="x")
model.fit(x, y, epochs=3)
'''

ADDED = '''def make():
    model = Sequential()
    model.add(Conv2D(16, kernel_size=3, input_shape=(8, 8, 1)))
    model.add(MaxPooling2D(2))
    model.add(Conv2D(32, kernel_size=3))
    model.add(MaxPooling2D(2))
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    return model
'''

FOREST = '''from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score

clf = RandomForestClassifier(n_estimators=2, max_depth=1, random_state=0)
clf.fit(x_train, y_train)
print(accuracy_score(y_test, clf.predict(x_test)))
'''


def by_name(found: literals.Found) -> dict[str, literals.Literal]:
    return {lit.name: lit for lit in found.literals}


def test_the_functional_cnn_s_literals_are_found_with_names_places_and_values() -> None:
    found = by_name(literals.find({"train.py": FUNCTIONAL}))
    assert {k: (v.value, v.line) for k, v in found.items()} == {
        "epochs": (1, 4),                 # the constant's line: EPOCHS = 1 flows into epochs=EPOCHS
        "learning_rate": (1e-6, 5),
        "conv_blocks": (1, 10),
        "conv2d_1.filters": (8, 10),
        "conv2d_1.kernel_size": (3, 10),  # (3, 3), a square kernel
        "dense_blocks": (1, 13),
        "dense_1.units": (16, 13),        # the output Dense(10, softmax) is never a hyperparameter
        "dropout_1.rate": (0.5, 14),
        "batch_size": (32, 22),
    }
    assert found["epochs"].constant == "EPOCHS" and found["learning_rate"].constant == "LEARNING_RATE"


def test_the_last_dense_of_a_stack_is_the_output_even_without_softmax() -> None:
    found = by_name(literals.find({"train.py": SEQUENTIAL}))
    assert "dense_2.units" not in found                 # Dense(10): logits, the classes
    assert found["dense_1.units"].value == 8
    assert found["learning_rate"].value == 0.01         # SGD(0.01), positional
    assert found["conv_blocks"].value == 1 and found["dense_blocks"].value == 1


def test_sklearn_keywords_and_sdk_params_reading_code() -> None:
    found = literals.find({"train.py": FOREST})
    assert found.params() == {"n_estimators": 2, "max_depth": 1}
    assert not found.uses_sdk_params
    assert literals.find({"train.py": "from mlchain import sdk\np = sdk.params()\nf(epochs=3)\n"}).uses_sdk_params


def test_estimator_keywords_count_only_where_a_class_is_built_and_defaults_count_too() -> None:
    text = ("import matplotlib.pyplot as plt\n"
            "def train(epochs=10, batch_size=64, verbose=1):\n"
            "    model = LogisticRegression(C=0.5, max_iter=50)\n"
            "    plt.plot(history, alpha=0.5)\n"
            "    model.fit(x, y)\n")
    found = literals.find({"train.py": text})
    assert found.params() == {"epochs": 10, "batch_size": 64, "C": 0.5, "max_iter": 50}
    rewritten = literals.rewrite({"train.py": text}, {"epochs": 20, "C": 2.0})["train.py"]
    assert "def train(epochs=20, batch_size=64, verbose=1):" in rewritten
    assert "LogisticRegression(C=2.0, max_iter=50)" in rewritten and "alpha=0.5" in rewritten
    assert literals.find({"t.py": "from mlchain.sdk import params\nf(epochs=1)\n"}).uses_sdk_params


def test_names_count_across_the_files_of_a_repository_in_import_order() -> None:
    sources = {"main.py": "from pkg.model import build\nbuild().fit(x, y, epochs=2)\n",
               "src/pkg/model.py": "def build():\n    return Sequential([Dense(32), Dense(64), Dense(10)])\n"}
    found = by_name(literals.find(sources))
    assert (found["dense_1.units"].file, found["dense_1.units"].value) == ("src/pkg/model.py", 32)
    assert found["dense_2.units"].value == 64 and found["epochs"].file == "main.py"


def test_a_constant_used_twice_is_one_hyperparameter_named_after_its_first_use() -> None:
    found = literals.find({"t.py": "UNITS = 64\nm = Sequential([Dense(UNITS), Dense(UNITS), Dense(10)])\n"})
    assert [(lit.name, lit.constant) for lit in found.literals] == [("dense_1.units", "UNITS"),
                                                                   ("dense_blocks", None)]


def test_rewriting_changes_only_the_literals_asked_and_keeps_comments_and_layout() -> None:
    new = literals.rewrite({"train.py": FUNCTIONAL}, {"epochs": 12, "learning_rate": 0.003, "dense_1.units": 64,
                                                      "conv2d_1.kernel_size": 5, "batch_size": 32})
    text = new["train.py"]
    assert "EPOCHS = 12  # one pass is not enough\n" in text
    assert "LEARNING_RATE = 0.003\n" in text
    assert 'layers.Conv2D(8, (5, 5), activation="relu", padding="same")(inputs)' in text
    assert 'layers.Dense(64, activation="relu")(x)' in text
    diff = literals.unified_diff({"train.py": FUNCTIONAL}, new)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert len(changed) == 8  # four lines out, four in: nothing else moved
    ast.parse(text)


def test_more_blocks_repeat_the_last_block_reading_the_chain_variable() -> None:
    text = literals.rewrite({"train.py": FUNCTIONAL}, {"conv_blocks": 3, "dense_blocks": 2})["train.py"]
    body = [line.strip() for line in text.splitlines()]
    convs = [line for line in body if "Conv2D" in line]
    assert convs == ['x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(inputs)',
                     'x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)',
                     'x = layers.Conv2D(8, (3, 3), activation="relu", padding="same")(x)']
    assert body.count("x = layers.MaxPooling2D(2)(x)") == 3
    assert body.count('x = layers.Dense(16, activation="relu")(x)') == 2
    assert body.count("x = layers.Dropout(0.5)(x)") == 2
    assert body.count('outputs = layers.Dense(10, activation="softmax")(x)') == 1


def test_a_repeated_first_layer_loses_its_input_shape_and_a_list_keeps_its_commas() -> None:
    text = literals.rewrite({"t.py": SEQUENTIAL}, {"conv_blocks": 2, "conv2d_1.filters": 32})["t.py"]
    assert text.count('keras.layers.Conv2D(32, 3, activation="relu", input_shape=(8, 8, 1))') == 1
    assert text.count('keras.layers.Conv2D(32, 3, activation="relu")') == 1
    assert text.count("keras.layers.MaxPooling2D(),") == 2
    tree = ast.parse(text)
    seq = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "Sequential")
    assert isinstance(seq.args[0], ast.List) and len(seq.args[0].elts) == 7


def test_fewer_blocks_drop_them_from_the_end_of_an_add_stack() -> None:
    assert by_name(literals.find({"m.py": ADDED}))["conv_blocks"].value == 2
    text = literals.rewrite({"m.py": ADDED}, {"conv_blocks": 1})["m.py"]
    assert "Conv2D(32" not in text and text.count("MaxPooling2D(2)") == 1 and "Conv2D(16" in text
    ast.parse(text)


def test_nothing_to_change_rewrites_no_file() -> None:
    found = literals.find({"train.py": FOREST})
    assert literals.rewrite({"train.py": FOREST}, found.params()) == {}
    assert literals.rewrite({"train.py": "def broken(:\n"}, {"epochs": 3}) == {}  # unparsable: untouched


def test_changes_in_short_form() -> None:
    found = literals.find({"train.py": FUNCTIONAL})
    values = {**found.params(), "dense_1.units": 64, "epochs": 12, "conv_blocks": 2, "dropout_1.rate": 0.25}
    assert literals.changes(found, values) == ["EPOCHS 1 -> 12 at train.py:4",  # in the order of the code
                                               "conv blocks 1 -> 2 at train.py:10",
                                               "Dense(16) -> Dense(64) at train.py:13",
                                               "Dropout(0.5) -> Dropout(0.25) at train.py:14"]


def test_imported_modules_absolute_and_relative() -> None:
    text = "import numpy as np\nfrom pkg.model import build\nfrom . import util\nfrom .data import load\n"
    assert literals.imported_modules(text) == ["numpy", "pkg.model", "pkg.model.build", ".util", ".data",
                                               ".data.load"]


def test_found_literals_are_searched_in_the_default_range_of_their_kind() -> None:
    found = literals.find({"train.py": FUNCTIONAL})
    space = tweak.literal_space("keras", found.kinds())
    assert space["dense_1.units"] == tweak.DEFAULT_SPACES["keras"]["dense_units"]
    assert space["dropout_1.rate"] == tweak.DEFAULT_SPACES["keras"]["dropout"]
    assert space["epochs"] == tweak.DEFAULT_SPACES["keras"]["epochs"]
    assert space["conv_blocks"].high == 3 and space["dense_blocks"].low == 1
    forest = tweak.literal_space("sklearn", literals.find({"train.py": FOREST}).kinds())
    assert forest == {"n_estimators": tweak.DEFAULT_SPACES["sklearn"]["n_estimators"],
                      "max_depth": tweak.DEFAULT_SPACES["sklearn"]["max_depth"]}
