# mlchain training image: keras2 (TensorFlow 2.15 with Keras 2.15, for code written against Keras 2).
#
# Built by `mlchain images build` (src/mlchain/images.py), which assembles the context:
#   Dockerfile, requirements.txt (this framework's), requirements-mlchain.txt (from
#   pyproject.toml), build-ca.pem (the CA bundle for the package index, may be empty),
#   mlchain/ (pyproject.toml, README.md, src/).
# The training code is not baked in: it is mounted read-only at /workspace/repo.
#
# Three stages so that (1) the CA bundle never reaches the final image: it lives only in
# the builder stages, and the final stage copies the installed files, not the layer that
# held the CA; (2) a change of mlchain's source rebuilds only the small last layers,
# never the framework install.
ARG BASE_IMAGE=python:3.11-slim

# --- deps: the framework layer -------------------------------------------------------
FROM ${BASE_IMAGE} AS deps
# Index overrides for hosts that need them; declared only in the builder stages, so
# they are neither ENV nor history of the final image.
ARG MLCHAIN_PIP_INDEX_URL=
ARG MLCHAIN_PIP_TRUSTED_HOST=
COPY build-ca.pem requirements.txt requirements-mlchain.txt /tmp/build/
RUN set -eu; \
    if [ -s /tmp/build/build-ca.pem ]; then export PIP_CERT=/tmp/build/build-ca.pem; fi; \
    if [ -n "$MLCHAIN_PIP_INDEX_URL" ]; then export PIP_INDEX_URL="$MLCHAIN_PIP_INDEX_URL"; fi; \
    if [ -n "$MLCHAIN_PIP_TRUSTED_HOST" ]; then export PIP_TRUSTED_HOST="$MLCHAIN_PIP_TRUSTED_HOST"; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --upgrade pip; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check \
        "setuptools>=68" wheel \
        -r /tmp/build/requirements.txt -r /tmp/build/requirements-mlchain.txt
# Keras 2.13-2.15 moved their modules under keras.src; code written for Keras 2 imports them at
# their old paths (keras.utils.np_utils, keras.layers.core ...). Aliases at those paths:
RUN set -eu; keras=$(echo /opt/venv/lib/python3*/site-packages/keras); \
    printf 'from keras.src.utils.np_utils import normalize, to_categorical  # noqa: F401\n' \
        > "$keras/utils/np_utils.py"; \
    printf 'from keras.src.utils.generic_utils import *  # noqa: F403\nfrom keras.utils import Progbar, get_custom_objects  # noqa: F401\n' \
        > "$keras/utils/generic_utils.py"; \
    for module in core convolutional recurrent embeddings pooling merge advanced_activations noise; do \
        printf 'from keras.layers import *  # noqa: F403\n' > "$keras/layers/$module.py"; \
    done; \
    mkdir -p "$keras/layers/normalization"; \
    printf 'from keras.layers import BatchNormalization, LayerNormalization  # noqa: F401\n' \
        > "$keras/layers/normalization/__init__.py"
# Keras 2 up to 2.10 read Adam(lr=...) as the learning rate; 2.11-2.15 warn and drop it, so
# code written for Keras 2 would silently train at the default rate. The optimizers take lr= again.
RUN /opt/venv/bin/python -c "import glob, py_compile; \
p = glob.glob('/opt/venv/lib/python3*/site-packages/keras/src/optimizers/optimizer.py')[0]; s = open(p).read(); \
a = '        lr = kwargs.pop(\"lr\", None)\n'; b = '    def _build_learning_rate(self, learning_rate):\n'; \
assert s.count(a) == 1 and s.count(b) == 2, 'Keras changed: update the lr= patch in keras2.Dockerfile'; \
s = s.replace(a, a + '        self._keras2_lr = lr\n').replace(b, b + '        if getattr(self, \"_keras2_lr\", None) is not None:\n            learning_rate = self._keras2_lr\n', 1); \
open(p, 'w').write(s); py_compile.compile(p)"
# (pip's compiled .pyc files stay: the root filesystem is read-only at run time, and
# TensorFlow would otherwise be compiled on every start.)

# --- app: mlchain itself, staged under /staging so the final stage copies only it ----
FROM deps AS app
COPY mlchain/ /tmp/mlchain/
# Offline: setuptools is already in the venv, and --no-deps installs nothing else.
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --no-build-isolation --no-deps --root /staging /tmp/mlchain

# --- final -------------------------------------------------------------------------
FROM ${BASE_IMAGE}
RUN set -eu; \
    useradd --uid 10001 --user-group --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlchain; \
    mkdir -p /workspace/repo /workspace/output /workspace/checkpoints /workspace/data; \
    chown 10001:10001 /workspace/output /workspace/checkpoints
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /staging/ /
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /workspace
USER 10001:10001
# Labels last: a version bump must not invalidate the layers above.
ARG MLCHAIN_VERSION=0.0.0
ARG MLCHAIN_SOURCE=https://github.com/mlchain/mlchain
LABEL org.opencontainers.image.title="mlchain-keras2" \
      org.opencontainers.image.description="mlchain training image: TensorFlow 2.15 (CPU) with Keras 2; mlchain-train runs the mounted repository" \
      org.opencontainers.image.version="${MLCHAIN_VERSION}" \
      org.opencontainers.image.source="${MLCHAIN_SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.mlchain.framework="keras2"
ENTRYPOINT ["mlchain-train"]
