"""The pure parts of the environment real code needs: Keras 2 vs 3, dataset calls, requirement lines,
pip's conflict output, the sandbox's dataset mounts and network, and the cache's vouched files."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mlchain.detect import classify_repo, decide, parse_python, parse_requirements_txt
from mlchain.detect.evidence import datasets_in
from mlchain.detect.rules import caps_below, pinned_below_keras3
from mlchain.errors import ConfigError


def classify(files: dict[str, str], tmp_path: Path) -> Any:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return classify_repo(tmp_path)


KERAS2_CODE = """\
    from keras.models import Sequential
    from keras.layers import Dense
    from keras.optimizers import Adam
    from keras.utils import np_utils

    y = np_utils.to_categorical(labels, 10)
    model = Sequential()
    model.add(Dense(10, activation="softmax", input_shape=(64,)))
    model.compile(loss="categorical_crossentropy", optimizer=Adam(lr=0.01))
    model.fit_generator(batches, epochs=3)
"""

KERAS3_CODE = """\
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((64,)), layers.Dense(10, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.Adam(learning_rate=0.01))
    model.fit(x, y, epochs=3)
"""


def test_keras2_apis_pick_the_keras2_image_and_the_explanation_names_each_api_and_line(tmp_path: Path) -> None:
    decision = classify({"train.py": KERAS2_CODE}, tmp_path)
    assert decision.framework == "keras2"
    found = {(r.line, r.symbol) for r in decision.keras2_markers}
    assert (4, "keras.utils.np_utils") in found            # the import
    assert (9, "keras.optimizers.Adam") in found           # Adam(lr=...)
    assert (10, "keras.Model.fit_generator") in found
    text = decision.explain()
    assert "Keras 2 code, so the keras2 image" in text
    assert "train.py:4" in text and "keras.utils.np_utils (Keras 3 removed it)" in text
    assert "train.py:9" in text and "Adam(lr=...): Keras 3 refuses lr=" in text
    assert decision.scores["keras"] > 0 and "keras2" not in decision.scores  # scored as keras, then told apart


def test_keras3_code_stays_on_the_keras_image(tmp_path: Path) -> None:
    decision = classify({"train.py": KERAS3_CODE}, tmp_path)
    assert decision.framework == "keras"
    assert decision.keras2_markers == ()
    assert "Keras 3 code (the keras image)" in decision.explain()


@pytest.mark.parametrize("tf_spelling", ["tensorflow.keras", "tf.keras"])
def test_tf_keras_spellings_of_keras2_apis_count(tmp_path: Path, tf_spelling: str) -> None:
    code = f"""\
        import tensorflow as tf
        from {tf_spelling.replace('tf.', 'tensorflow.')}.preprocessing.image import ImageDataGenerator
        model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
        gen = ImageDataGenerator(rotation_range=10)
    """
    decision = classify({"train.py": code}, tmp_path)
    assert decision.framework == "keras2"
    assert {r.line for r in decision.keras2_markers} == {2, 4}


@pytest.mark.parametrize("requirements,framework", [
    ("keras<3\n", "keras2"),
    ("tensorflow==2.15.1\n", "keras2"),
    ("tensorflow>=2.8,<2.16\n", "keras2"),
    ("keras==2.*\n", "keras2"),
    ("tensorflow>=2.16\n", "keras"),
    ("keras>=3.0\n", "keras"),
    ("tensorflow\n", "keras"),
])
def test_pins_below_keras3_in_requirement_files_pick_keras2(tmp_path: Path, requirements: str,
                                                            framework: str) -> None:
    decision = classify({"train.py": KERAS3_CODE, "requirements.txt": requirements}, tmp_path)
    assert decision.framework == framework
    if framework == "keras2":
        assert "requirements.txt:1" in decision.explain() and "pinned below Keras 3" in decision.explain()


def test_framework_override_keras_wins_over_keras2_markers_and_keras2_is_accepted(tmp_path: Path) -> None:
    assert classify({"train.py": KERAS2_CODE, "mlchain.yaml": "framework: keras\n"}, tmp_path).framework == "keras"
    (tmp_path / "mlchain.yaml").write_text("framework: keras2\n")
    (tmp_path / "train.py").write_text(textwrap.dedent(KERAS3_CODE))
    decided = classify_repo(tmp_path)
    assert decided.framework == "keras2" and decided.overridden


def test_a_sklearn_repository_with_a_stray_keras2_import_stays_sklearn() -> None:
    source, _ = parse_python("train.py", textwrap.dedent("""\
        from keras.utils import np_utils
        from sklearn.ensemble import RandomForestClassifier
        clf = RandomForestClassifier().fit(X, y)
    """))
    assert source is not None
    decision = decide([source])
    assert decision.framework == "sklearn"
    assert "keras2" not in decision.scores


@pytest.mark.parametrize("spec,limit,below", [
    ("<3", (3,), True), ("<3.0", (3,), True), ("<3.1", (3,), False), ("<=2.15", (3,), True),
    ("==2.15.0", (2, 16), True), ("==2.16.0", (2, 16), False), ("==2.*", (3,), True), ("==2.*", (2, 16), False),
    ("~=2.12", (3,), True), ("~=2.12", (2, 16), False), ("~=2.15.0", (2, 16), True), (">=2.4", (3,), False),
    (">=2.4,<2.16", (2, 16), True), ("", (3,), False), ("!=3.0", (3,), False),
])
def test_caps_below(spec: str, limit: tuple[int, ...], below: bool) -> None:
    assert caps_below(spec, limit) is below


def test_pins_are_read_per_distribution_with_extras_and_markers() -> None:
    assert pinned_below_keras3("tensorflow", "tensorflow[and-cuda]<=2.15.1 ; python_version<'3.12'")
    assert not pinned_below_keras3("scikit-learn", "scikit-learn<3")
    reqs = parse_requirements_txt("requirements.txt", "keras < 3  # old code\n")
    assert pinned_below_keras3(reqs[0].name, reqs[0].spec)


# --- dataset calls ---------------------------------------------------------------------

def test_dataset_calls_are_found_through_every_spelling() -> None:
    source, _ = parse_python("train.py", textwrap.dedent("""\
        import tensorflow as tf
        from tensorflow.keras.datasets import fashion_mnist
        from keras.datasets import mnist
        from sklearn.datasets import fetch_openml, load_digits
        import sklearn.datasets as skd

        a = mnist.load_data()
        b = tf.keras.datasets.cifar10.load_data()
        c = fashion_mnist.load_data()
        d = fetch_openml(name="mnist_784", version=1, as_frame=False, parser=some_parser)
        e = skd.fetch_california_housing()
        f = load_digits()
        g = mnist.load_data(path="my-mnist.npz")
    """))
    assert source is not None
    found = [(c.library, c.name, c.line, c.kwargs) for c in datasets_in(source)]
    assert found == [
        ("keras", "mnist", 7, ()),
        ("keras", "cifar10", 8, ()),
        ("keras", "fashion_mnist", 9, ()),
        ("sklearn", "fetch_openml", 10, (("name", "mnist_784"), ("version", 1), ("as_frame", False))),
        ("sklearn", "fetch_california_housing", 11, ()),
        ("keras", "mnist", 13, (("path", "my-mnist.npz"),)),
    ]  # load_digits ships with scikit-learn: nothing to fetch


def test_keras_file_names_follow_the_library_layout_and_never_a_path() -> None:
    from mlchain.datasets import keras_file
    from mlchain.detect.evidence import DatasetCall

    assert keras_file(DatasetCall("keras", "mnist", "t.py", 1, "mnist.load_data()")) == "mnist.npz"
    assert keras_file(DatasetCall("keras", "mnist", "t.py", 1, "x", (("path", "m.npz"),))) == "m.npz"
    assert keras_file(DatasetCall("keras", "mnist", "t.py", 1, "x", (("path", "../../etc/passwd"),))) == "mnist.npz"
    assert keras_file(DatasetCall("keras", "unknown", "t.py", 1, "x")) is None


def test_a_missing_dataset_that_cannot_be_fetched_says_which_where_and_network_true(make_settings: Any,
                                                                                    monkeypatch: Any) -> None:
    from mlchain import datasets
    from mlchain.detect.evidence import DatasetCall
    from mlchain.errors import DatasetError

    # The host's fetch is a real subprocess: here the library's download fails as it does offline.
    monkeypatch.setattr(datasets, "KERAS_FETCH", "raise SystemExit('URL fetch failure: no network')")
    settings = make_settings()
    call = DatasetCall("keras", "mnist", "train.py", 7, "mnist.load_data()")
    with pytest.raises(DatasetError) as info:
        datasets.prepare_datasets(settings, [call], network=False)
    text = info.value.message
    assert "dataset mnist (train.py:7: mnist.load_data())" in text and "URL fetch failure: no network" in text
    assert str(datasets.keras_datasets_dir(settings) / "mnist.npz") in text
    assert "network: true" in text and info.value.exit_code == 18
    # with network: true the host fetches nothing and mounts nothing the container would need to write
    assert datasets.prepare_datasets(settings, [call], network=True) == {}


def test_the_manifest_vouches_for_the_files_the_host_saw(make_settings: Any) -> None:
    import json

    from mlchain import datasets
    from mlchain.dataset_trust import vouched_validator
    from mlchain.detect.evidence import DatasetCall

    settings = make_settings()
    folder = datasets.keras_datasets_dir(settings)
    folder.mkdir(parents=True)
    (folder / "mnist.npz").write_bytes(b"made by the operator")
    mounts = datasets.prepare_datasets(settings, [DatasetCall("keras", "mnist", "t.py", 1, "x")], network=False)
    assert mounts == {"keras": str(folder)}
    manifest = json.loads((folder / ".mlchain-manifest.json").read_text())
    assert manifest == {"mnist.npz": hashlib.sha256(b"made by the operator").hexdigest()}

    calls: list[Any] = []
    validate = vouched_validator(folder, manifest, lambda *a, **k: calls.append(a) or False)
    assert validate(str(folder / "mnist.npz"), "origin-hash") is True and calls == []
    (folder / "mnist.npz").write_bytes(b"changed since")      # no longer what the host saw
    assert validate(str(folder / "mnist.npz"), "origin-hash") is False and len(calls) == 1
    assert validate("/elsewhere/mnist.npz", "origin-hash") is False   # only the cache's own files


# --- the sandbox: dataset mounts and network ----------------------------------------------

def test_container_options_mount_the_cache_read_only_and_open_the_network_only_on_request(tmp_path: Path) -> None:
    from dataclasses import replace

    from docker_support import make_spec

    from mlchain.config import Settings
    from mlchain.runners.docker import DockerRunner

    runner = DockerRunner(Settings(home=tmp_path), client=object())  # type: ignore[arg-type]
    spec = make_spec(tmp_path, "r1", tmp_path / "repo", "img:1", framework="keras")
    closed = runner.container_options(spec, "img:1")
    assert closed["network_mode"] == "none" and "KERAS_HOME" not in closed["environment"]
    spec = replace(spec, network=True, datasets={"keras": str(tmp_path / "k" / "datasets"),
                                                 "sklearn": str(tmp_path / "s")})
    opened = runner.container_options(spec, "img:1")
    assert opened["network_mode"] == "bridge"
    assert opened["volumes"][str(tmp_path / "k" / "datasets")] == {"bind": "/tmp/.keras/datasets", "mode": "ro"}
    assert opened["volumes"][str(tmp_path / "s")] == {"bind": "/tmp/scikit_learn_data", "mode": "ro"}
    env = opened["environment"]
    assert (env["KERAS_HOME"], env["SCIKIT_LEARN_DATA"]) == ("/tmp/.keras", "/tmp/scikit_learn_data")
    assert env["MLCHAIN_KERAS_DATASETS"] == "/tmp/.keras/datasets"


def test_network_true_is_a_repository_setting_that_reaches_the_trials_spec(make_settings: Any,
                                                                           tmp_path: Path) -> None:
    from mlchain.repo_config import parse_repo_config
    from mlchain.trial import make_spec

    cfg = parse_repo_config("network: true\n")
    assert cfg.network is True
    spec = make_spec(make_settings(), run_id="r", trial=1, framework="keras", repo_dir=tmp_path, cfg=cfg,
                     params={}, datasets={"keras": "/cache/keras/datasets"})
    again = type(spec).from_json(spec.to_json())      # as job3 and the monitor read it back
    assert (again.network, again.datasets, again.python) == (True, {"keras": "/cache/keras/datasets"}, None)
    assert parse_repo_config("").network is False
    with pytest.raises(ConfigError, match="network"):
        parse_repo_config("network: maybe\n")


# --- the repository's requirements ------------------------------------------------------

def test_requirements_are_normalised_sorted_and_tensorflow_is_the_images_cpu_build() -> None:
    from mlchain.repo_layer import parse_requirements

    text = "Tabulate >= 0.9  # pretty tables\n\nsklearn\nTensorFlow==2.15.1\nrequests[socks] ; python_version >= '3.8'\n"
    found = parse_requirements(text, "requirements.txt", "keras2")
    assert found.lines == ("requests[socks] ; python_version >= '3.8'", "scikit-learn", "tabulate>=0.9",
                           "tensorflow-cpu==2.15.1")
    assert found.where == {"tabulate": 1, "scikit-learn": 3, "tensorflow-cpu": 4, "requests": 5}
    assert parse_requirements(text, "requirements.txt", "sklearn").lines[-1] == "tensorflow==2.15.1"


def test_hostile_requirement_lines_are_refused_all_at_once_with_their_lines() -> None:
    from mlchain.repo_layer import parse_requirements

    lines = ["numpy", "-e .", "--index-url https://evil.example/simple", "-r other.txt", "./local_pkg",
             "pkg @ https://evil.example/pkg.whl", "git+https://example.com/x.git", "/abs/path.whl",
             "--extra-index-url=https://x", "-c constraints.txt", "../up", "pandas; os.system('x')"]
    text = "\n".join(lines)
    with pytest.raises(ConfigError) as info:
        parse_requirements(text, "requirements.txt", "sklearn")
    message = info.value.message
    for line in range(2, 13):
        assert f"requirements.txt:{line}:" in message
    assert "requirements.txt:1:" not in message
    assert "the option -e is not allowed" in message and "the option --index-url is not allowed" in message
    assert "a URL is not allowed" in message and "a local path is not allowed" in message
    assert "not an environment marker: os.system" in message
    assert info.value.exit_code == 3


def test_pyproject_dependencies_are_the_requirements_when_there_is_no_requirements_txt(tmp_path: Path) -> None:
    from mlchain.repo_layer import read_repo_requirements

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["tabulate>=0.9", "six"]\n')
    found = read_repo_requirements(tmp_path, "sklearn")
    assert found is not None and found.lines == ("six", "tabulate>=0.9")
    (tmp_path / "requirements.txt").write_text("# nothing but a comment\n")
    assert read_repo_requirements(tmp_path, "sklearn") is None  # requirements.txt decides: it lists none


def test_the_layer_hash_depends_on_the_framework_image_and_the_normalised_requirements() -> None:
    from mlchain.repo_layer import layer_hash, parse_requirements

    a = parse_requirements("tabulate\nsix\n", "requirements.txt", "sklearn")
    b = parse_requirements("six  # same\nTabulate\n", "requirements.txt", "sklearn")
    c = parse_requirements("six\ntabulate==0.9.0\n", "requirements.txt", "sklearn")
    assert layer_hash("sha256:1", a, b"D") == layer_hash("sha256:1", b, b"D")
    assert len({layer_hash("sha256:1", a, b"D"), layer_hash("sha256:2", a, b"D"),
                layer_hash("sha256:1", c, b"D"), layer_hash("sha256:1", a, b"E")}) == 4


PIP_CONFLICT = """\
ERROR: Cannot install -r /tmp/build/requirements.txt (line 1) and scikit-learn==1.0 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested scikit-learn==1.0
    The user requested (constraint) scikit-learn==1.7.2

To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip to attempt to solve the dependency conflict

ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
""".splitlines()


def test_pips_conflict_output_becomes_a_message_naming_both_sides() -> None:
    from mlchain.repo_layer import conflict_message, parse_requirements

    reqs = parse_requirements("tabulate\nscikit-learn==1.0\n", "requirements.txt", "sklearn")
    said = conflict_message(PIP_CONFLICT, reqs, "sklearn", {"scikit-learn": "scikit-learn>=1.4,<2"})
    assert said is not None
    message, hint = said
    assert message == ("the repository's requirements conflict with the sklearn image: requirements.txt:2 asks for "
                       "scikit-learn==1.0; the sklearn image has scikit-learn==1.7.2 (its pin: scikit-learn>=1.4,<2 "
                       "in requirements-sklearn.txt)")
    assert "requirements.txt" in hint
    missing = conflict_message(["ERROR: No matching distribution found for nosuchpkg==9"], reqs, "sklearn", {})
    assert missing is not None and "no version of nosuchpkg==9" in missing[0]
    assert conflict_message(["something else broke"], reqs, "sklearn", {}) is None


def test_the_framework_pins_are_read_from_the_shipped_requirements() -> None:
    from mlchain.repo_layer import framework_pins

    assert framework_pins("sklearn")["scikit-learn"] == "scikit-learn>=1.4,<2"
    assert framework_pins("keras2")["tensorflow-cpu"] == "tensorflow-cpu==2.15.1"


def test_keras2_code_is_searched_over_the_keras_space() -> None:
    from mlchain.tweak import search_space

    params = {"learning_rate": 0.01, "epochs": 5, "unknown": 1}
    assert search_space("keras2", {}, params) == search_space("keras", {}, params)
    assert set(search_space("keras2", {}, params)) == {"learning_rate", "epochs"}


def test_requirements_the_environment_already_satisfies_need_no_layer() -> None:
    from mlchain.repo_layer import parse_requirements, unmet

    installed = {"scikit-learn": "1.7.2", "numpy": "2.1.0", "Tabulate": "0.9.0"}
    reqs = parse_requirements("scikit-learn>=1.4,<2\nnumpy\ntabulate==0.9.0\n"
                              "pywin32 ; sys_platform == 'win32'\n", "requirements.txt", "sklearn")
    assert unmet(reqs, installed) == []      # all there (the Windows-only line is not for this platform)
    reqs = parse_requirements("scikit-learn==1.0\nsix\nnumpy[extra]\n", "requirements.txt", "sklearn")
    assert unmet(reqs, installed) == ["numpy[extra]", "scikit-learn==1.0", "six"]


def test_the_examples_requirements_need_no_venv_for_the_process_runner(make_settings: Any) -> None:
    from mlchain.repo_layer import ensure_repo_venv

    root = Path(__file__).resolve().parents[2] / "models"
    settings = make_settings(runner="process")
    assert ensure_repo_venv(settings, root / "digits_sklearn", "sklearn") is None
    assert not (settings.home_abs / "envs").exists()
