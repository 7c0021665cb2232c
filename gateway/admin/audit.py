"""`GET /admin/v1/audit`: the changes made through the admin API, newest first.

Entries are written by `Admin.changed` (who: the admin key id; when; what: an action,
its target and ids, field names or counts). They never hold a secret, a key or a
policy's contents.
"""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from gateway.admin.context import Admin
from gateway.admin.schemas import AuditPage

__all__ = ["routes"]


@get("/audit", summary="The audit log, newest first")
async def audit_log(
    admin: NamedDependency[Admin],
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    before: Annotated[
        float | None,
        QueryParameter(ge=0, le=32_503_680_000, description="Only entries older than this"),
    ] = None,
) -> AuditPage:
    entries = await admin.store.audit_log(limit=limit, before=before)
    more = len(entries) == limit
    return AuditPage(data=entries, next_before=entries[-1].at if more else None)


routes = [audit_log]
