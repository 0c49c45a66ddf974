"""connections/address_check.py: checking each domain once gives email-validator's own answers.

The fast path (local part and a cached domain check) and ``validate_email`` whole must agree on
every address: the same (local part, ASCII domain, SMTPUTF8), or the same refusal word for word.
"""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgem.connections import address_check
from mailgem.connections.address_check import validated


def whole(address: str) -> tuple[str, str, bool] | str:
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"{type(exc).__name__}: {exc}"
    return valid.local_part or "", valid.ascii_domain, bool(valid.smtputf8)


def fast(address: str) -> tuple[str, str, bool] | str:
    try:
        return validated(address)
    except EmailNotValidError as exc:
        return f"{type(exc).__name__}: {exc}"


# Local parts and domains near the rules: dots, specials, case, RFC 2142 names, lengths.
LOCAL = st.one_of(st.sampled_from(["user", "Postmaster", "ABUSE", "a.b", ".a", "a.", "a..b", "", "x" * 64, "x" * 65,
                                   "a+b", "a!#$%&'*+/=?^_`{|}~-b", "a,b", "a(b)", "a;b", "é", "\tx"]),
                  st.text(alphabet="abcXYZ09.-_+!#$%&'*/=?^`{|}~,;:()", min_size=0, max_size=70))
DOMAIN = st.one_of(st.sampled_from(["example.com", "EXAMPLE.com", "example.com.", ".example.com", "exa..mple.com",
                                    "localhost", "host", "corp.local", "corp.internal", "example", "-a.com", "a-.com",
                                    "xn--exmple-cua.com", "XN--EXMPLE-CUA.com", "exämple.com", "1.2.3.4", "[1.2.3.4]",
                                    "a_b.com", ("a" * 63 + ".") * 3 + "com", ("a" * 64) + ".com", "example.invalid",
                                    "test", "example.test", "a@b.com", ""]),
                   st.text(alphabet="abcXYZ09.-_", min_size=0, max_size=40))


@settings(max_examples=600, deadline=None)
@given(LOCAL, DOMAIN)
def test_the_fast_path_agrees_with_validate_email(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert fast(address) == whole(address)
    assert fast(address) == whole(address)  # the second time from the domain cache


@pytest.mark.parametrize("address", [
    "user@example.com", "Postmaster@Example.COM", "x" * 64 + "@" + "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + ".com",
    "x" * 64 + "@" + ("a" * 60 + ".") * 3 + "abcd.com", "no-at-sign", "a@", "@example.com", "a@@example.com",
    '"quoted"@example.com', "Name <a@example.com>", "josé@example.com", "a@exämple.com", "a b@example.com",
    "a@localhost", "a@corp.local", "a\x00b@example.com"])
def test_known_addresses_agree(address: str) -> None:
    assert fast(address) == whole(address)


def test_a_domain_is_checked_once() -> None:
    address_check._domain.cache_clear()
    for i in range(50):
        validated(f"user{i}@once.example.com")
    info = address_check._domain.cache_info()
    assert (info.misses, info.hits) == (1, 49)


def test_a_refused_domain_is_not_cached_and_says_why_each_time() -> None:
    address_check._domain.cache_clear()
    for _ in range(2):
        with pytest.raises(EmailNotValidError, match="special-use or reserved"):
            validated("user@corp.local")
    assert address_check._domain.cache_info().currsize == 0
