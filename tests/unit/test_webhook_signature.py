from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from mlchain.webhook.signature import sign, verify


def test_sign_matches_githubs_documented_example() -> None:
    # docs.github.com "Validating webhook deliveries": secret "It's a Secret to Everybody"
    assert sign(b"It's a Secret to Everybody", b"Hello, World!") == \
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_verify_good_wrong_and_missing() -> None:
    body = b'{"ref":"refs/heads/main"}'
    good = sign(b"s", body)
    assert verify(b"s", body, good)
    assert not verify(b"s", body + b" ", good)
    assert not verify(b"other", body, good)
    assert not verify(b"s", body, None)
    assert not verify(b"s", body, "")
    assert not verify(b"s", body, good.removeprefix("sha256="))
    assert not verify(b"s", body, "sha1=" + hmac.new(b"s", body, hashlib.sha1).hexdigest())


@given(st.binary(max_size=64), st.binary(max_size=256), st.text(max_size=80))
def test_verify_never_raises_and_accepts_only_the_signature(secret: bytes, body: bytes, header: str) -> None:
    assert verify(secret, body, header) is (header.strip() == sign(secret, body))
    assert verify(secret, body, sign(secret, body))
