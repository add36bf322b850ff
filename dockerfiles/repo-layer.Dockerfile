# mlchain repository layer: a repository's own requirements over its framework image.
#
# Built by mlchain (src/mlchain/repo_layer.py), which assembles the context: Dockerfile,
# requirements.txt (the repository's, checked and normalised), build-ca.pem (the CA bundle
# for the package index, may be empty). Tagged by a hash of the framework image's id and the
# normalised requirements, so a second run with the same requirements builds nothing.
#
# Two stages: the CA bundle lives only in the builder; the final stage copies the files the
# install added (pip --root), not the layer that held the CA.
ARG FRAMEWORK_IMAGE

FROM ${FRAMEWORK_IMAGE} AS deps
# As the image's own (training) user: pip stages into a folder of its own under /tmp.
ARG MLCHAIN_PIP_INDEX_URL=
ARG MLCHAIN_PIP_TRUSTED_HOST=
COPY build-ca.pem requirements.txt /tmp/build/
# Everything the framework image has installed is a constraint at its installed version: the
# repository adds packages, it never moves the framework's (pip says which pins conflict).
RUN set -eu; \
    if [ -s /tmp/build/build-ca.pem ]; then export PIP_CERT=/tmp/build/build-ca.pem; fi; \
    if [ -n "$MLCHAIN_PIP_INDEX_URL" ]; then export PIP_INDEX_URL="$MLCHAIN_PIP_INDEX_URL"; fi; \
    if [ -n "$MLCHAIN_PIP_TRUSTED_HOST" ]; then export PIP_TRUSTED_HOST="$MLCHAIN_PIP_TRUSTED_HOST"; fi; \
    /opt/venv/bin/pip list --format=freeze --disable-pip-version-check > /tmp/constraints.txt; \
    mkdir -p /tmp/staging; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --root /tmp/staging \
        -c /tmp/constraints.txt -r /tmp/build/requirements.txt

FROM ${FRAMEWORK_IMAGE}
COPY --from=deps /tmp/staging/ /
USER 10001:10001
