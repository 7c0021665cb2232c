"""Data-subject requests (NDPA, GDPR) for one end user of one tenant.

`GET …/users/{user}/export` returns every retained record that names the end user;
`DELETE …/users/{user}` erases them (the tenant's and each key's totals stay right, the
user's share of them is moved to the no-user group). Neither needs the tenant to exist
any more: records outlive a deleted tenant until retention ends. The erasure is
audited with a SHA-256 prefix of the user id, never the id itself.
"""

from __future__ import annotations

import hashlib

from litestar import delete, get
from litestar.di import NamedDependency
from litestar.params import FromPath

from gateway.admin.context import Admin
from gateway.admin.schemas import SubjectErasure, SubjectExport

__all__ = ["routes"]

_USER = "/tenants/{tenant_id:str}/users/{user:str}"


def user_digest(user: str) -> str:
    """What the audit log keeps of an erased user id: a 16-hex SHA-256 prefix."""
    return hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@get(_USER + "/export", summary="Export every record naming an end user")
async def export_user(
    tenant_id: FromPath[str], user: FromPath[str], admin: NamedDependency[Admin]
) -> SubjectExport:
    records = await admin.store.ledger.user_records(tenant_id, user)
    return SubjectExport(tenant=tenant_id, user=user, count=len(records), records=records)


@delete(_USER, status_code=200, summary="Erase every record naming an end user")
async def erase_user(
    tenant_id: FromPath[str], user: FromPath[str], admin: NamedDependency[Admin]
) -> SubjectErasure:
    erased = await admin.store.ledger.erase_user(tenant_id, user)
    await admin.changed(
        "user.erase", tenant_id, user_sha256=user_digest(user), usage_records=erased
    )
    return SubjectErasure(tenant=tenant_id, erased={"usage_records": erased})


routes = [export_user, erase_user]
