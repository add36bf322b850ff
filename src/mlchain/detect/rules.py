"""What counts as evidence, and how much: the kinds of evidence, the tables of calls,
imports, model methods and distributions a framework is recognised by, and the names the
classifier resolves before it looks them up. Pure data and lookups; the rest of the
classifier reads these tables and nothing else decides what a name means.
"""

from __future__ import annotations

import re
from functools import lru_cache

# --- evidence kinds and tables -------------------------------------------------------

MODEL_BUILDING = "model-building"
USAGE = "usage"
IMPORT = "import"
REQUIREMENT = "requirement"
OVERRIDE = "override"
KERAS2_API = "keras 2"  # an API Keras 3 removed, or a pin below Keras 3: the keras2 image
WEAKER_EVIDENCE = "weaker evidence"  # how a decision without model-building evidence was made

# Call (or base class) name, after canonical() and matched by longest dotted prefix
# -> (framework, kind, weight). Frameworks outside FRAMEWORKS are recognised only to
# say what was found when it is not supported.
CALLS: dict[str, tuple[str, str, float]] = {
    # TensorFlow / Keras (tf.keras, keras 3, tf_keras are all canonicalised to "keras.")
    "keras.Sequential": ("keras", MODEL_BUILDING, 10.0),
    "keras.Model": ("keras", MODEL_BUILDING, 10.0),
    "keras.models": ("keras", MODEL_BUILDING, 10.0),
    "keras.applications": ("keras", MODEL_BUILDING, 10.0),
    "keras.Input": ("keras", MODEL_BUILDING, 3.0),
    "keras.layers": ("keras", MODEL_BUILDING, 3.0),
    "keras.optimizers": ("keras", MODEL_BUILDING, 2.0),
    "keras.losses": ("keras", MODEL_BUILDING, 2.0),
    "keras.callbacks": ("keras", MODEL_BUILDING, 2.0),
    "keras.regularizers": ("keras", MODEL_BUILDING, 1.0),
    "keras.initializers": ("keras", MODEL_BUILDING, 1.0),
    "keras": ("keras", USAGE, 1.0),
    "tensorflow": ("keras", USAGE, 1.0),
    # scikit-learn: estimators build the model; everything else is a helper
    "sklearn.ensemble": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.linear_model": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.svm": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.neighbors": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.tree": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.neural_network": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.naive_bayes": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.discriminant_analysis": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.gaussian_process": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.kernel_ridge": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.multiclass": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.multioutput": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.semi_supervised": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.cluster": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.mixture": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.isotonic": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.cross_decomposition": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.calibration.CalibratedClassifierCV": ("sklearn", MODEL_BUILDING, 10.0),
    "sklearn.pipeline": ("sklearn", MODEL_BUILDING, 5.0),
    "sklearn.model_selection.GridSearchCV": ("sklearn", MODEL_BUILDING, 5.0),
    "sklearn.model_selection.RandomizedSearchCV": ("sklearn", MODEL_BUILDING, 5.0),
    "sklearn.base": ("sklearn", MODEL_BUILDING, 5.0),
    "sklearn.dummy": ("sklearn", MODEL_BUILDING, 3.0),
    "sklearn": ("sklearn", USAGE, 1.0),
    # unsupported, recognised to name them
    "torch.nn": ("torch", MODEL_BUILDING, 3.0),
    "torch.nn.Module": ("torch", MODEL_BUILDING, 10.0),
    "torch.nn.Sequential": ("torch", MODEL_BUILDING, 10.0),
    "torch.optim": ("torch", MODEL_BUILDING, 2.0),
    "torch": ("torch", USAGE, 1.0),
    "torchvision.models": ("torch", MODEL_BUILDING, 10.0),
    "torchvision": ("torch", USAGE, 1.0),
    "lightning": ("torch", MODEL_BUILDING, 10.0),
    "pytorch_lightning": ("torch", MODEL_BUILDING, 10.0),
    "flax.linen": ("jax", MODEL_BUILDING, 3.0),
    "flax.linen.Module": ("jax", MODEL_BUILDING, 10.0),
    "flax": ("jax", USAGE, 1.0),
    "haiku": ("jax", MODEL_BUILDING, 3.0),
    "optax": ("jax", MODEL_BUILDING, 2.0),
    "jax": ("jax", USAGE, 1.0),
    "xgboost.XGBClassifier": ("xgboost", MODEL_BUILDING, 10.0),
    "xgboost.XGBRegressor": ("xgboost", MODEL_BUILDING, 10.0),
    "xgboost.XGBRanker": ("xgboost", MODEL_BUILDING, 10.0),
    "xgboost.train": ("xgboost", MODEL_BUILDING, 10.0),
    "xgboost": ("xgboost", USAGE, 1.0),
    "lightgbm.LGBMClassifier": ("lightgbm", MODEL_BUILDING, 10.0),
    "lightgbm.LGBMRegressor": ("lightgbm", MODEL_BUILDING, 10.0),
    "lightgbm.train": ("lightgbm", MODEL_BUILDING, 10.0),
    "lightgbm": ("lightgbm", USAGE, 1.0),
    "catboost.CatBoostClassifier": ("catboost", MODEL_BUILDING, 10.0),
    "catboost.CatBoostRegressor": ("catboost", MODEL_BUILDING, 10.0),
    "catboost": ("catboost", USAGE, 1.0),
    "mxnet.gluon": ("mxnet", MODEL_BUILDING, 3.0),
    "mxnet": ("mxnet", USAGE, 1.0),
    "paddle.nn": ("paddle", MODEL_BUILDING, 3.0),
    "paddle": ("paddle", USAGE, 1.0),
    "theano": ("theano", USAGE, 1.0),
}

# Top-level module imported -> (framework, weight).
IMPORTS: dict[str, tuple[str, float]] = {
    "tensorflow": ("keras", 2.0),
    "keras": ("keras", 2.0),
    "tf_keras": ("keras", 2.0),
    "sklearn": ("sklearn", 2.0),
    "torch": ("torch", 2.0),
    "torchvision": ("torch", 2.0),
    "torchaudio": ("torch", 2.0),
    "lightning": ("torch", 2.0),
    "pytorch_lightning": ("torch", 2.0),
    "jax": ("jax", 2.0),
    "jaxlib": ("jax", 2.0),
    "flax": ("jax", 2.0),
    "haiku": ("jax", 2.0),
    "optax": ("jax", 2.0),
    "xgboost": ("xgboost", 2.0),
    "lightgbm": ("lightgbm", 2.0),
    "catboost": ("catboost", 2.0),
    "mxnet": ("mxnet", 2.0),
    "paddle": ("paddle", 2.0),
    "theano": ("theano", 2.0),
}

# Methods called on an object a framework's model-building call returned -> weight.
MODEL_METHODS: dict[str, float] = {
    "compile": 2.0,
    "fit": 2.0,
    "fit_generator": 2.0,
    "train_on_batch": 2.0,
    "partial_fit": 2.0,
    "add": 1.0,
}

# Distribution name (PEP 503 normalised) in a requirement file -> (framework, weight).
REQUIREMENTS: dict[str, tuple[str, float]] = {
    **{name: ("keras", 1.0) for name in (
        "tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tensorflow-intel",
        "tf-nightly", "tf-nightly-cpu", "keras", "keras-nightly", "tf-keras")},
    "scikit-learn": ("sklearn", 1.0),
    "sklearn": ("sklearn", 1.0),
    **{name: ("torch", 1.0) for name in (
        "torch", "pytorch", "torchvision", "torchaudio", "lightning", "pytorch-lightning")},
    **{name: ("jax", 1.0) for name in ("jax", "jaxlib", "flax", "dm-haiku", "optax")},
    "xgboost": ("xgboost", 1.0),
    "py-xgboost": ("xgboost", 1.0),
    "lightgbm": ("lightgbm", 1.0),
    "catboost": ("catboost", 1.0),
    "mxnet": ("mxnet", 1.0),
    "paddlepaddle": ("paddle", 1.0),
    "theano": ("theano", 1.0),
}

# --- Keras 2 or Keras 3 --------------------------------------------------------------

# The image for Keras code written against Keras 2, and the family it belongs to (the
# decision scores a family; a Keras 2 marker then picks the family's Keras 2 image).
KERAS2 = "keras2"
FAMILY: dict[str, str] = {KERAS2: "keras"}

# APIs Keras 3 removed (canonical names, matched by dotted prefix) -> what to say about them.
KERAS2_ONLY: dict[str, str] = {
    "keras.utils.np_utils": "keras.utils.np_utils (Keras 3 removed it)",
    "keras.utils.generic_utils": "keras.utils.generic_utils (Keras 3 removed it)",
    "keras.layers.normalization": "keras.layers.normalization (Keras 3 removed the module)",
    "keras.layers.merge": "keras.layers.merge (Keras 3 removed the module)",
    "keras.layers.core": "keras.layers.core (Keras 3 removed the module)",
    "keras.layers.convolutional": "keras.layers.convolutional (Keras 3 removed the module)",
    "keras.layers.recurrent": "keras.layers.recurrent (Keras 3 removed the module)",
    "keras.layers.embeddings": "keras.layers.embeddings (Keras 3 removed the module)",
    "keras.layers.pooling": "keras.layers.pooling (Keras 3 removed the module)",
    "keras.layers.advanced_activations": "keras.layers.advanced_activations (Keras 3 removed the module)",
    "keras.layers.experimental": "keras.layers.experimental (Keras 3 removed it)",
    "keras.wrappers": "keras.wrappers.scikit_learn (Keras 3 removed it)",
    "keras.optimizers.legacy": "keras.optimizers.legacy (Keras 3 removed it)",
    "keras.engine": "keras.engine (Keras 3 removed it)",
    "keras.preprocessing.image.ImageDataGenerator": "ImageDataGenerator (Keras 3 removed it)",
    "keras.preprocessing.text": "keras.preprocessing.text (Keras 3 removed it)",
    "keras_preprocessing": "keras_preprocessing (the Keras 2 preprocessing package)",
}
# Methods Keras 3 removed, called on anything in a file that imports Keras.
KERAS2_METHODS = frozenset({"fit_generator", "evaluate_generator", "predict_generator"})
# Keyword arguments of Keras 2 optimizers that Keras 3 refuses (``Adam(lr=...)``).
KERAS2_OPTIMIZER_KEYWORDS = frozenset({"lr"})
PIN_BELOW_KERAS3 = "pinned below Keras 3"  # how a requirement marker says why
# Distribution -> the first version that is (or brings) Keras 3: a pin below it is Keras 2 code.
KERAS3_FROM: dict[str, tuple[int, ...]] = {
    "keras": (3,),
    **{name: (2, 16) for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos",
                                  "tensorflow-intel")},
}


@lru_cache(maxsize=8192)
def keras2_only(name: str) -> str | None:
    """What to say about a resolved name when it is an API Keras 3 removed, else None."""
    key = canonical(name)
    while True:
        said = KERAS2_ONLY.get(key)
        if said is not None:
            return said
        key, sep, _ = key.rpartition(".")
        if not sep:
            return None


_CLAUSE = re.compile(r"^\s*(===|==|~=|<=|<|!=|>=|>)\s*([0-9][0-9a-zA-Z.*+!-]*)\s*$")


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version (``2.15.0rc1`` -> (2, 15, 0)); a ``*`` ends it."""
    out = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        out.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(out)


def _padded(version: tuple[int, ...], length: int) -> tuple[int, ...]:
    return version + (0,) * (length - len(version))


def caps_below(specifiers: str, limit: tuple[int, ...]) -> bool:
    """Do these version specifiers (``<3``, ``==2.*``, ``>=2.8,<2.16``, ``~=2.12``) keep every
    allowed version below ``limit``? (Pure; an unreadable clause caps nothing.)"""
    for clause in specifiers.split(","):
        match = _CLAUSE.match(clause)
        if match is None:
            continue
        op, version = match.groups()
        release = _release(version)
        if not release:
            continue
        if op == "~=" and len(release) >= 2:
            op, version, release = "==", version + ".*", release[:-1]  # ~=2.12 allows 2.*
        width = max(len(release), len(limit))
        if op == "==" and version.endswith("*"):
            if release < _padded(limit, len(release))[:len(release)]:
                return True
        elif op in ("==", "===", "<="):
            if _padded(release, width) < _padded(limit, width):
                return True
        elif op == "<" and _padded(release, width) <= _padded(limit, width):
            return True
    return False


def pinned_below_keras3(dist: str, spec: str) -> bool:
    """A requirement line that keeps Keras (or TensorFlow's Keras) below Keras 3 (pure)."""
    first = KERAS3_FROM.get(dist)
    if first is None:
        return False
    specifiers = re.sub(r"^\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?", "", spec.split(";", 1)[0])
    return caps_below(specifiers.strip(), first)


# --- datasets the code downloads -------------------------------------------------------

# keras.datasets.<name>.load_data() -> what it leaves in Keras' cache folder (datasets/):
# a file, or the folder an archive is extracted to.
KERAS_DATASETS: dict[str, str] = {
    "mnist": "mnist.npz",
    "imdb": "imdb.npz",
    "reuters": "reuters.npz",
    "boston_housing": "boston_housing.npz",
    "california_housing": "california_housing.npz",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}
SKLEARN_FETCH_PREFIX = "sklearn.datasets.fetch_"


def dataset_of(name: str) -> tuple[str, str] | None:
    """(library, dataset) for a resolved call that downloads a dataset, else None:
    ``keras.datasets.mnist.load_data`` -> ("keras", "mnist"); ``sklearn.datasets.fetch_openml``
    -> ("sklearn", "fetch_openml")."""
    key = canonical(name)
    parts = key.split(".")
    if len(parts) == 4 and parts[:2] == ["keras", "datasets"] and parts[3] == "load_data":
        return "keras", parts[2]
    if key.startswith(SKLEARN_FETCH_PREFIX) and key.count(".") == 2:
        return "sklearn", parts[2]
    return None


# Module prefixes that are the same Keras API -> the canonical prefix used in CALLS.
_CANONICAL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("tensorflow.keras", "keras"),
    ("tensorflow.python.keras", "keras"),
    ("tensorflow.compat.v1.keras", "keras"),
    ("tensorflow.compat.v2.keras", "keras"),
    ("tf_keras", "keras"),
    ("keras.src", "keras"),
    ("keras.api", "keras"),
)

RELEVANT_ROOTS = frozenset(IMPORTS) | {name.split(".", 1)[0] for name in CALLS}
# A file whose bytes contain none of these cannot import anything relevant: it is read
# but not parsed (it would contribute no evidence). Shortest distinct substrings.
NEEDLES: tuple[bytes, ...] = tuple(sorted(
    {r.encode() for r in RELEVANT_ROOTS
     if not any(o != r and o in r for o in RELEVANT_ROOTS)}))


@lru_cache(maxsize=8192)
def canonical(name: str) -> str:
    """``tensorflow.keras.layers.Conv2D`` -> ``keras.layers.Conv2D`` (same API, one spelling)."""
    for _ in range(2):  # tensorflow.keras.src... needs two rewrites
        for prefix, repl in _CANONICAL_PREFIXES:
            if name == prefix or name.startswith(prefix + "."):
                name = repl + name[len(prefix):]
                break
        else:
            return name
    return name


@lru_cache(maxsize=8192)
def lookup_call(name: str) -> tuple[str, str, float] | None:
    """The CALLS entry for a resolved (not yet canonical) name, by longest dotted prefix."""
    if name.partition(".")[0] not in RELEVANT_ROOTS:
        return None
    key = canonical(name)
    while True:
        hit = CALLS.get(key)
        if hit is not None:
            return hit
        key, sep, _ = key.rpartition(".")
        if not sep:
            return None


def mentions_framework(data: bytes) -> bool:
    """Cheap prefilter: can these bytes import any module the tables know? (no: no evidence)."""
    for needle in NEEDLES:
        if needle in data:
            return True
    return False
