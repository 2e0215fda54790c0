"""Table tests of a call's arguments: canonical JSON, its digest, redaction, the size bound."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest

from gatekeeper.core.arguments import MASK, MAX_ARGUMENTS_BYTES, bind, canonical, check_size, digest, redact


@pytest.mark.parametrize(("arguments", "expected"), [
    ({}, b"{}"),
    ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),  # sorted keys, no spaces
    ({"z": {"y": [3, {"b": True, "a": None}]}}, b'{"z":{"y":[3,{"a":null,"b":true}]}}'),  # sorted at any depth
    ({"name": "Zoë", "city": "東京"}, '{"city":"東京","name":"Zoë"}'.encode()),  # UTF-8, not \\u escapes
    ({"nul": "a\x00b", "tab": "\t"}, b'{"nul":"a\\u0000b","tab":"\\t"}'),  # control characters escaped
    ({"big": 12345678901234567890123, "f": 0.5, "neg": -1}, b'{"big":12345678901234567890123,"f":0.5,"neg":-1}'),
    ({"quote": 'say "hi"'}, b'{"quote":"say \\"hi\\""}'),
])
def test_canonical_json(arguments: dict[str, Any], expected: bytes) -> None:
    assert canonical(arguments) == expected


def test_the_digest_is_the_sha256_of_the_canonical_form_and_ignores_key_order() -> None:
    assert digest({"to": "ana", "amount": 20}) == hashlib.sha256(b'{"amount":20,"to":"ana"}').hexdigest()
    assert digest({"amount": 20, "to": "ana"}) == digest({"to": "ana", "amount": 20})
    assert digest({"amount": 20, "to": "ana"}) != digest({"amount": 21, "to": "ana"})
    assert digest({"amount": 20}) != digest({"amount": "20"})
    assert len(digest({})) == 64


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"x": math.nan}, "NaN"),
    ({"x": math.inf}, "NaN"),
    ({"x": "\ud800"}, "surrogate"),
    ({"x": object()}, "JSON"),
])
def test_arguments_without_a_json_form_are_refused(arguments: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        canonical(arguments)


@pytest.mark.parametrize(("arguments", "fields", "expected"), [
    ({"card_number": "4111", "amount": 5}, ["card_number"], {"card_number": MASK, "amount": 5}),
    ({"payment": {"card_number": "4111", "cvc": "123"}}, ["card_number", "cvc"],
     {"payment": {"card_number": MASK, "cvc": MASK}}),  # at any depth
    ({"cards": [{"card_number": "1"}, {"card_number": "2", "x": 1}]}, ["card_number"],
     {"cards": [{"card_number": MASK}, {"card_number": MASK, "x": 1}]}),  # inside lists
    ({"Password": "p", "user": {"PASSWORD": "q"}}, ["password"], {"Password": MASK, "user": {"PASSWORD": MASK}}),
    ({"password": {"nested": "secret"}}, ["password"], {"password": MASK}),  # a whole sub-object is masked
    ({"note": "card_number"}, ["card_number"], {"note": "card_number"}),  # values are not field names
    ({"a": 1}, [], {"a": 1}),
])
def test_redaction(arguments: dict[str, Any], fields: list[str], expected: dict[str, Any]) -> None:
    before = canonical(arguments)
    assert redact(arguments, fields) == expected
    assert canonical(arguments) == before  # the caller's arguments are left alone


def test_bind_keeps_the_redacted_json_and_the_digest_of_the_unredacted_arguments() -> None:
    arguments = {"to": "ana", "card_number": "4111 1111 1111 1111"}
    bound = bind(arguments, redact_fields=["card_number"])
    assert bound.redacted == '{"card_number":"[redacted]","to":"ana"}'
    assert bound.digest == digest(arguments) != digest({"to": "ana", "card_number": MASK})


def test_the_size_bound_is_16_kib_of_canonical_json() -> None:
    overhead = len(canonical({"x": ""}))
    check_size({"x": "a" * (MAX_ARGUMENTS_BYTES - overhead)})
    with pytest.raises(ValueError, match="at most 16384 bytes"):
        check_size({"x": "a" * (MAX_ARGUMENTS_BYTES - overhead + 1)})
    with pytest.raises(ValueError, match="at most 16384 bytes"):  # counted in UTF-8 bytes, not characters
        check_size({"x": "é" * (MAX_ARGUMENTS_BYTES // 2)})
