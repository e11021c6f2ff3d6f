from __future__ import annotations

import pytest
from sqlalchemy import select

from noor.jobs import tenants
from noor.jobs.store import Store
from noor.jobs.tenants import ApiKey, TenantError


def test_keys_are_shown_once_and_stored_hashed(store: Store) -> None:
    tenants.create_tenant(store, "acme", regions=["me-riyadh"], credits_cents=500)
    key = tenants.create_key(store, "acme")
    assert key.startswith("noor_") and len(key) > 40
    with store.session() as s:
        stored = s.scalars(select(ApiKey)).all()
    assert [k.key_hash for k in stored] == [tenants.hash_key(key)] and key not in stored[0].key_hash
    tenant = tenants.authenticate(store, key)
    assert tenant is not None and tenant.name == "acme" and tenant.regions == ["me-riyadh"]
    assert tenants.authenticate(store, key + "x") is None
    assert tenants.revoke_key(store, key) and tenants.authenticate(store, key) is None


def test_credits_fall_and_refunds_rise(store: Store) -> None:
    tenants.create_tenant(store, "acme", credits_cents=100)
    assert tenants.charge(store, "acme", 30.5) == pytest.approx(69.5)
    assert tenants.charge(store, "acme", -30.5) == pytest.approx(100)
    with pytest.raises(TenantError):
        tenants.charge(store, "nobody", 1)


@pytest.mark.parametrize(("name", "credits"), [("Bad Name", 0), ("", 0), ("ok", -1)])
def test_bad_tenants_are_refused(store: Store, name: str, credits: float) -> None:
    with pytest.raises(TenantError):
        tenants.create_tenant(store, name, credits_cents=credits)


def test_duplicate_tenant_and_key_for_unknown_tenant(store: Store) -> None:
    tenants.create_tenant(store, "acme")
    with pytest.raises(TenantError, match="exists"):
        tenants.create_tenant(store, "acme")
    with pytest.raises(TenantError, match="no tenant"):
        tenants.create_key(store, "globex")
