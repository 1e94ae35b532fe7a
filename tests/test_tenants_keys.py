"""API keys to tenants, and ``coe keys new``."""

from __future__ import annotations

import argparse
import hashlib

import pytest

from gateway.commands import keys as keys_command
from gateway.config import parse_settings
from gateway.errors import Unauthorized
from gateway.tenants import ADMIN_TENANT, DEFAULT_TENANT, KeyRing, Principal, new_key

ACME_KEY, ACME_DIGEST = new_key()
BETA_KEY, BETA_DIGEST = new_key()
ADMIN_KEY, ADMIN_DIGEST = new_key()

RING = KeyRing.from_settings(
    parse_settings(
        {
            "tenants": [
                {"name": "acme", "api_key_sha256": [ACME_DIGEST]},
                # Digests may be written in capitals; the config lowercases them.
                {"name": "beta", "api_key_sha256": [BETA_DIGEST.upper()]},
            ],
            "admin": {"api_key_sha256": [ADMIN_DIGEST]},
        }
    )
)
OPEN_RING = KeyRing.from_settings(parse_settings({}))


def test_new_key_is_random_and_its_digest_is_its_sha256() -> None:
    key, digest = new_key()
    assert key.startswith("sk-coe-") and len(key) > 40
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert new_key()[0] != key


def test_a_tenant_key_maps_to_its_tenant() -> None:
    assert RING.authenticate(f"Bearer {ACME_KEY}") == Principal("acme", is_admin=False)
    assert RING.authenticate(f"bearer {BETA_KEY}") == Principal("beta", is_admin=False)


def test_an_admin_key_is_an_admin() -> None:
    assert RING.authenticate(f"Bearer {ADMIN_KEY}") == Principal(ADMIN_TENANT, is_admin=True)


def test_with_tenants_a_key_is_required() -> None:
    assert RING.requires_key
    with pytest.raises(Unauthorized, match="required"):
        RING.authenticate(None)


def test_an_unknown_key_is_refused_without_repeating_it() -> None:
    with pytest.raises(Unauthorized) as caught:
        RING.authenticate("Bearer sk-coe-not-a-real-key")
    assert "sk-coe-not-a-real-key" not in caught.value.message
    assert caught.value.status_code == 401


def test_a_header_that_is_not_a_bearer_key_is_refused() -> None:
    with pytest.raises(Unauthorized, match="Bearer KEY"):
        RING.authenticate(f"Basic {ACME_KEY}")


def test_without_tenants_everyone_is_the_default_tenant() -> None:
    assert not OPEN_RING.requires_key
    for header in (None, "", "Bearer anything", "Basic xyz"):
        assert OPEN_RING.authenticate(header) == Principal(DEFAULT_TENANT, is_admin=False)


def test_without_tenants_an_admin_key_still_makes_an_admin() -> None:
    ring = KeyRing.from_settings(parse_settings({"admin": {"api_key_sha256": [ADMIN_DIGEST]}}))
    assert ring.authenticate(f"Bearer {ADMIN_KEY}") == Principal(ADMIN_TENANT, is_admin=True)
    assert ring.authenticate(None) == Principal(DEFAULT_TENANT, is_admin=False)


def test_keys_new_prints_a_key_and_its_config_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="coe")
    keys_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "new"])
    assert args.func(args) == 0
    key, line = capsys.readouterr().out.splitlines()
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert line == f'api_key_sha256 = ["{digest}"]'
    ring = KeyRing.from_settings(
        parse_settings({"tenants": [{"name": "new", "api_key_sha256": [digest]}]})
    )
    assert ring.authenticate(f"Bearer {key}").tenant == "new"
