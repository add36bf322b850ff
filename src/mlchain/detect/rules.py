"""What counts as evidence, and how much: the kinds of evidence, the tables of calls,
imports, model methods and distributions a framework is recognised by, and the names the
classifier resolves before it looks them up. Pure data and lookups; the rest of the
classifier reads these tables and nothing else decides what a name means.
"""

from __future__ import annotations

from functools import lru_cache

# --- evidence kinds and tables -------------------------------------------------------

MODEL_BUILDING = "model-building"
USAGE = "usage"
IMPORT = "import"
REQUIREMENT = "requirement"
OVERRIDE = "override"
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
