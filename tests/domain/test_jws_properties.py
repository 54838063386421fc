"""Property tests for compact JWS parsing, token verification and thumbprints (spec §4).

Spec §4.1 (EdDSA only, strict parsing), §4.2 (RFC 7638 thumbprints), §4.2 (``typ`` as a
media type), §4.6 (times), §5.13 (every token failure is 401 ``invalid_jwt``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, example, given
from hypothesis import strategies as st

from agentauth import jws, keys
from agentauth.client.identity import Keypair
from agentauth.client.tokens import sign_host_jwt
from agentauth.errors import ProtocolError
from agentauth.tokens import AGENT_TYP, HOST_TYP, bearer_token, verify_agent_jwt, verify_host_jwt

ISSUER = "http://testserver/api/auth"
B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def expect_invalid_jwt(exc: ProtocolError) -> None:
    assert (exc.code, exc.status) == ("invalid_jwt", 401), exc
    assert isinstance(exc.message, str) and exc.message


def parse_or_refuse(token: Any) -> jws.ParsedJWS | None:
    """``jws.parse``'s whole contract: a well-formed ParsedJWS, or 401 invalid_jwt; nothing
    else may escape."""
    try:
        parsed = jws.parse(token)
    except ProtocolError as exc:
        expect_invalid_jwt(exc)
        return None
    assert isinstance(parsed, jws.ParsedJWS)
    assert isinstance(parsed.header, dict) and isinstance(parsed.claims, dict)
    assert parsed.header.get("alg") == "EdDSA" and "crit" not in parsed.header
    assert len(parsed.signature) == 64
    head, payload, _ = token.split(".")
    assert parsed.signing_input == f"{head}.{payload}".encode("ascii")
    return parsed


keypairs = st.binary(min_size=32, max_size=32).map(
    lambda seed: Keypair(Ed25519PrivateKey.from_private_bytes(seed))
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
headers = st.one_of(
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["EdDSA", "EdDSA", "none", "HS256", "ES256", "eddsa", "Ed25519"])},
        optional={
            "typ": st.sampled_from([HOST_TYP, AGENT_TYP, "JWT"]) | json_scalars,
            "kid": json_scalars,
            "crit": st.lists(st.text(max_size=4), max_size=2),
        },
    ),
    json_values,
)
#: JSON text with the shapes ``strict_json_loads`` must refuse next to the ordinary ones.
json_texts = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
    st.floats().map(lambda f: json.dumps({"x": f}).encode()),  # NaN, Infinity
    st.sampled_from(
        [
            b'{"a":1,"a":2}',
            b'{"alg":"EdDSA","alg":"EdDSA"}',
            b'{"x":"\\ud800"}',
            b'{"x":"\xed\xa0\x80"}',
            b'{"x":"\\ud83d\\ude00"}',
            b'{"x":1e400}',
            b"[" * 3000 + b"]" * 3000,
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            b"",
            b"{",
        ]
    ),
    st.binary(max_size=64),
)
signatures = st.binary(min_size=64, max_size=64) | st.binary(max_size=80)
segment_tokens = st.one_of(
    st.builds(
        lambda h, c, s: f"{b64(json.dumps(h).encode())}.{b64(json.dumps(c).encode())}.{b64(s)}",
        headers,
        json_values,
        signatures,
    ),
    st.builds(lambda h, c, s: f"{b64(h)}.{b64(c)}.{b64(s)}", json_texts, json_texts, signatures),
)
arbitrary_tokens = st.one_of(
    st.text(),
    st.binary().map(lambda raw: raw.decode("latin-1")),
    st.text(alphabet=B64URL_ALPHABET + ".=+/ \t", max_size=200),
    st.lists(st.text(alphabet=B64URL_ALPHABET, max_size=30), max_size=5).map(".".join),
    segment_tokens,
    st.integers(8000, 9000).map(lambda n: "a.b." + "A" * n),
    st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text()), json_objects),
)


# --- jws.parse ------------------------------------------------------------------------------


@given(arbitrary_tokens)
@example("..")
@example("a.b.c")
@example(".".join([b64(b'{"alg":"EdDSA"}'), b64(b"{}"), b64(bytes(64))]))
@example(".".join([b64(b'{"alg":"EdDSA"}'), b64(b'{"x":"\\udc00"}'), b64(bytes(64))]))
def test_parse_returns_a_jws_or_refuses_with_invalid_jwt(token: Any) -> None:
    parse_or_refuse(token)


@given(
    st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    json_objects,
    st.binary(min_size=64, max_size=64),
)
def test_well_formed_segments_parse_back_exactly(
    header_extra: dict[str, Any], claims: dict[str, Any], signature: bytes
) -> None:
    """Any JSON object header with ``alg: EdDSA`` and no ``crit``, any JSON object payload and a
    64-byte signature parse to exactly those values (JSON round trip, no re-interpretation)."""
    header = {**{k: v for k, v in header_extra.items() if k != "crit"}, "alg": "EdDSA"}
    token = ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )
    parsed = parse_or_refuse(token)
    if len(token) > jws.MAX_TOKEN_LENGTH:
        assert parsed is None  # refused by length before any decoding
        return
    assert parsed is not None
    assert (parsed.header, parsed.claims, parsed.signature) == (header, claims, signature)


# --- signing round trip, tampering ----------------------------------------------------------

extra_claims = st.dictionaries(
    # ``iss`` must stay a string for PyJWT; any other name may be overridden.
    st.text(min_size=1, max_size=12).filter(lambda k: k != "iss"),
    st.text(max_size=40) | st.integers(min_value=-(2**63), max_value=2**63),
    max_size=6,
)
extra_headers = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda k: k not in ("alg", "crit", "b64", "kid")),
    st.text(max_size=20) | st.integers(),
    max_size=3,
)


@given(keypairs, keypairs, extra_claims, extra_headers)
def test_signed_token_round_trips_and_verifies_only_with_its_key(
    key: Keypair, other: Keypair, claims: dict[str, Any], header_extra: dict[str, Any]
) -> None:
    assume(key.public_jwk != other.public_jwk)
    token = sign_host_jwt(key, audience=ISSUER, extra_claims=claims, extra_headers=header_extra)
    parsed = parse_or_refuse(token)
    assert parsed is not None

    base = {"iss", "sub", "aud", "iat", "exp", "jti", "host_public_key"}
    assert set(parsed.claims) == base | set(claims)
    for name, value in claims.items():
        assert parsed.claims[name] == value and type(parsed.claims[name]) is type(value)
    defaults = {
        "iss": key.thumbprint,
        "sub": key.thumbprint,
        "aud": ISSUER,
        "host_public_key": key.wire_jwk,
    }
    for name, value in defaults.items():
        if name not in claims:
            assert parsed.claims[name] == value
    if not {"iat", "exp"} & set(claims):
        assert parsed.claims["exp"] - parsed.claims["iat"] == 60
    for name, value in header_extra.items():
        assert parsed.header[name] == value
    if "typ" not in header_extra:
        assert jws.typ_matches(parsed.header, HOST_TYP)

    parsed.verify(key.public_key)
    with pytest.raises(ProtocolError) as refused:
        parsed.verify(other.public_key)
    expect_invalid_jwt(refused.value)


def verifies(token: str, key: Keypair) -> bool:
    parsed = parse_or_refuse(token)
    if parsed is None:
        return False
    try:
        parsed.verify(key.public_key)
    except ProtocolError as exc:
        expect_invalid_jwt(exc)
        return False
    return True


@given(keypairs, extra_claims, st.sampled_from([0, 1, 2]), st.data())
def test_changing_one_character_never_verifies(
    key: Keypair, claims: dict[str, Any], segment: int, data: Any
) -> None:
    token = sign_host_jwt(key, audience=ISSUER, extra_claims=claims)
    parts = token.split(".")
    text = parts[segment]
    index = data.draw(st.integers(0, len(text) - 1), label="index")
    replacement = data.draw(
        st.sampled_from(B64URL_ALPHABET + "=.+/ ").filter(lambda c: c != text[index]),
        label="replacement",
    )
    parts[segment] = text[:index] + replacement + text[index + 1 :]
    assert verifies(token, key)
    assert not verifies(".".join(parts), key)


def test_signature_has_exactly_one_spelling() -> None:
    """Exhaustively: no single-character change anywhere in the signature verifies. The last
    base64url character of a 64-byte signature carries 4 unused bits (RFC 4648 §3.5); if the
    decoder ignored them, 15 other spellings of that character would verify."""
    key = Keypair.generate()
    head, payload, signature = sign_host_jwt(key, audience=ISSUER).split(".")
    for index, original in enumerate(signature):
        for replacement in B64URL_ALPHABET:
            if replacement == original:
                continue
            tampered = signature[:index] + replacement + signature[index + 1 :]
            assert not verifies(f"{head}.{payload}.{tampered}", key), (index, replacement)


# --- typ ------------------------------------------------------------------------------------


def ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def accepted(typ: Any, expected: str) -> bool:
    """§4.2: ASCII case-insensitive (RFC 7515 §4.1.9 media type), optional ``application/``."""
    return isinstance(typ, str) and ascii_lower(typ) in (expected, "application/" + expected)


def mixed_case(text: str, flips: list[bool]) -> str:
    padded = flips + [False] * len(text)
    return "".join(
        c.upper() if flip else c for c, flip in zip(text, padded[: len(text)], strict=True)
    )


typ_spellings = st.builds(
    mixed_case,
    st.sampled_from([HOST_TYP, AGENT_TYP, "application/" + HOST_TYP, "application/" + AGENT_TYP]),
    st.lists(st.booleans(), max_size=25),
)
typ_lookalikes = st.one_of(
    typ_spellings,
    st.builds(
        lambda prefix, typ, suffix: prefix + typ + suffix,
        st.sampled_from(["", " ", "x/", "application/application/", "app/", "\x00", "text/"]),
        typ_spellings,
        st.sampled_from(["", " ", "\n", "+jwt", "s", "\x00"]),
    ),
    # Unicode that case-maps near ASCII: Kelvin sign, long s, dotted I, fullwidth letters.
    st.text(alphabet="hostagenjwpliciAPLICHOSTJW+/\u212a\u017f\u0130\uff48\uff4f", max_size=25),
    st.text(max_size=25),
)


@given(typ_lookalikes, st.sampled_from([HOST_TYP, AGENT_TYP]))
def test_typ_matches_media_type_rules(typ: str, expected: str) -> None:
    assert jws.typ_matches({"typ": typ}, expected) == accepted(typ, expected)


@given(typ_spellings)
def test_typ_accepts_every_case_and_the_application_prefix(typ: str) -> None:
    expected = ascii_lower(typ).removeprefix("application/")
    assert jws.typ_matches({"typ": typ}, expected)
    other = AGENT_TYP if expected == HOST_TYP else HOST_TYP
    assert not jws.typ_matches({"typ": typ}, other)


@given(json_values.filter(lambda v: not isinstance(v, str)))
def test_typ_must_be_a_string(value: Any) -> None:
    assert not jws.typ_matches({"typ": value}, HOST_TYP)
    assert not jws.typ_matches({}, HOST_TYP)


# --- thumbprints ----------------------------------------------------------------------------


@given(keypairs, st.data())
def test_thumbprint_is_rfc7638_and_ignores_member_order(key: Keypair, data: Any) -> None:
    jwk = key.public_jwk
    tp = keys.thumbprint(jwk)
    assert THUMBPRINT.fullmatch(tp)
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + jwk["x"] + '"}'
    assert tp == b64(hashlib.sha256(canonical.encode("ascii")).digest())

    optional = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "kid": st.text(max_size=10),
                "alg": st.sampled_from(["EdDSA", "Ed25519"]),
                "use": st.just("sig"),
            },
        ),
        label="optional members",
    )
    members = data.draw(st.permutations([*jwk.items(), *optional.items()]), label="order")
    reserialised = json.loads(
        json.dumps(dict(members), separators=data.draw(st.sampled_from([(",", ":"), (", ", ": ")])))
    )
    assert list(reserialised) == [name for name, _ in members]
    assert keys.thumbprint(reserialised) == tp == key.thumbprint


# --- tokens: Authorization header and verification ------------------------------------------

authorization_headers = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60),
    st.builds(
        lambda scheme, gap, token: f"{scheme}{gap}{token}",
        st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "DPoP", "", "Bearer:"]),
        st.sampled_from([" ", "  ", "\t", ""]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
    ),
)


@given(authorization_headers)
def test_bearer_token_extracts_or_refuses(header: str) -> None:
    request: Any = SimpleNamespace(META={"HTTP_AUTHORIZATION": header})
    scheme, _, rest = header.partition(" ")
    try:
        token = bearer_token(request)
    except ProtocolError as exc:
        expect_invalid_jwt(exc)
        assert scheme.lower() != "bearer" or not rest.strip()
        return
    assert scheme.lower() == "bearer" and token == rest.strip() and token


@pytest.mark.django_db
@given(arbitrary_tokens.filter(lambda t: isinstance(t, str)))
def test_verification_of_arbitrary_text_is_invalid_jwt(token: str) -> None:
    for verify in (
        lambda: verify_host_jwt(token),
        lambda: verify_host_jwt(token, allow_unknown=True, allow_pending=True),
        lambda: verify_agent_jwt(token, audiences={ISSUER}),
    ):
        with pytest.raises(ProtocolError) as refused:
            verify()
        expect_invalid_jwt(refused.value)


def times_acceptable(iat_offset: int, lifetime: int) -> bool:
    """§4.6 with the defaults: 30 s skew, 60 s maximum lifetime."""
    return 0 <= lifetime <= 60 and iat_offset <= 30 and iat_offset + lifetime + 30 >= 0


near_boundaries = st.one_of(st.integers(-120, 120), st.integers(-(10**9), 10**9))
out_of_range = st.sampled_from(
    [10**400, -(10**400), 1e308, -1e308, 2**63, "1700000000", None, True, [0], {"t": 0}]
)


@pytest.mark.django_db
@given(
    keypairs,
    st.one_of(
        st.tuples(near_boundaries, st.integers(-120, 120) | near_boundaries),
        st.tuples(out_of_range, st.integers(0, 60)),
        st.tuples(st.integers(-10, 10), out_of_range),
    ),
)
def test_time_claims_accepted_exactly_within_the_window(
    key: Keypair, times: tuple[Any, Any]
) -> None:
    """A validly signed host JWT is accepted iff ``iat``/``exp`` are numbers inside the window;
    otherwise it is 401 invalid_jwt (never an OverflowError or a TypeError)."""
    offset, lifetime = times
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in times)
    if numbers:
        # One second either side of a boundary depends on when the server reads its clock.
        assume(offset not in (30, 31) and offset + lifetime + 30 not in (0, 1))
    now = int(time.time())
    iat = now + offset if isinstance(offset, int) and not isinstance(offset, bool) else offset
    if isinstance(lifetime, int) and not isinstance(lifetime, bool):
        exp = iat + lifetime if isinstance(iat, int | float) and not isinstance(iat, bool) else now
    else:
        exp = lifetime
    claims = {"iat": iat, "exp": exp, "jti": str(uuid.uuid4())}
    token = sign_host_jwt(key, audience=ISSUER, extra_claims=claims)
    should_pass = numbers and times_acceptable(offset, lifetime)
    try:
        verified = verify_host_jwt(token, allow_unknown=True)
    except ProtocolError as exc:
        expect_invalid_jwt(exc)
        assert not should_pass, (times, exc.message)
    else:
        assert should_pass, times
        assert verified.host is None and verified.thumbprint == key.thumbprint
