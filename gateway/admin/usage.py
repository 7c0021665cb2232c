"""Usage reports from the ledger's day totals: `GET /admin/v1/usage` for any tenant, and
`GET /v1/usage` for a tenant's own usage with its own key (same shape).

    ?tenant=acme&from=2025-01-01&to=2025-01-31&group_by=day|model|key|user&format=json|csv

`from` and `to` are UTC days, both included (default: the 30 days to today), at most
400 days apart. JSON gives one row per group and their `total`; CSV gives a header row,
then one line per group (`group` empty for calls without an end user). A tenant key
naming another tenant in `tenant=` gets 403.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromQuery, QueryParameter

from gateway.admin.auth import TENANT_SECURITY, caller_of, tenant_only
from gateway.admin.context import Admin
from gateway.admin.errors import PermissionDenied, invalid_params
from gateway.admin.schemas import UsageReport, UsageRow
from gateway.errors import InvalidRequest
from gateway.ledger.records import METRICS, GroupBy, UsageTotals
from gateway.store.base import Store

__all__ = ["CSV_COLUMNS", "routes", "tenant_usage"]

Format = Literal["json", "csv"]
MAX_DAYS = 400
DEFAULT_DAYS = 30
CSV_COLUMNS = ("group", *(m if m != "cost_micro_usd" else "cost_usd" for m in METRICS))
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
First = Annotated[str | None, QueryParameter(name="from", description="First UTC day, YYYY-MM-DD")]
Last = Annotated[str | None, QueryParameter(name="to", description="Last UTC day, YYYY-MM-DD")]
Fmt = Annotated[Format, QueryParameter(name="format")]
_DOC = ResponseSpec(
    data_container=UsageReport,
    description="The report; with `format=csv`, the same rows as `text/csv` with a header row.",
)


def _day(value: str | None, param: str, default: dt.date) -> dt.date:
    if value is None:
        return default
    try:
        if _DAY.fullmatch(value):
            return dt.date.fromisoformat(value)
    except ValueError:
        pass
    raise InvalidRequest(f"`{param}` is not a valid day (YYYY-MM-DD).", param=param)


def _window(first: str | None, last: str | None) -> tuple[dt.date, dt.date]:
    to = _day(last, "to", dt.datetime.now(dt.UTC).date())
    since = _day(first, "from", to - dt.timedelta(days=DEFAULT_DAYS - 1))
    if to < since:
        raise InvalidRequest("`to` is before `from`.", param="to")
    if (to - since).days > MAX_DAYS:
        raise InvalidRequest(f"At most {MAX_DAYS} days per report.", param="from")
    return since, to


def _row(totals: UsageTotals) -> UsageRow:
    fields = msgspec.structs.asdict(totals)
    return UsageRow(**fields, cost_usd=totals.cost_micro_usd / 1_000_000)


def _usd(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


def _csv(rows: list[UsageTotals]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        cells = [
            _usd(r.cost_micro_usd) if m == "cost_micro_usd" else getattr(r, m) for m in METRICS
        ]
        writer.writerow([r.group or "", *cells])
    return out.getvalue().encode()


def _sum(rows: list[UsageTotals]) -> UsageTotals:
    return UsageTotals(None, **{m: sum(getattr(r, m) for r in rows) for m in METRICS})


async def _report(
    store: Store,
    tenant: str,
    first: str | None,
    last: str | None,
    group_by: GroupBy,
    fmt: Format,
) -> Response[Any]:
    since, to = _window(first, last)
    rows = await store.ledger.usage_totals(tenant, since, to, group_by)
    if fmt == "csv":
        return Response(_csv(rows), media_type="text/csv")
    report = UsageReport(
        tenant=tenant,
        from_=since.isoformat(),
        to=to.isoformat(),
        group_by=group_by,
        data=[_row(r) for r in rows],
        total=_row(_sum(rows)),
    )
    return Response(report)


@get("/usage", summary="A tenant's usage report", responses={200: _DOC})
async def admin_usage(
    admin: NamedDependency[Admin],
    tenant: Annotated[str, QueryParameter(min_length=1, max_length=256)],
    first: First = None,
    last: Last = None,
    group_by: FromQuery[GroupBy] = "day",
    fmt: Fmt = "json",
) -> Response[Any]:
    return await _report(admin.store, tenant, first, last, group_by, fmt)


@get(
    "/v1/usage",
    guards=[tenant_only],
    security=TENANT_SECURITY,
    exception_handlers={ValidationException: invalid_params},
    summary="The calling tenant's own usage report",
    responses={200: _DOC},
)
async def tenant_usage(
    request: Request[Any, Any, Any],
    tenant: Annotated[
        str | None, QueryParameter(description="Only the caller's own tenant")
    ] = None,
    first: First = None,
    last: Last = None,
    group_by: FromQuery[GroupBy] = "day",
    fmt: Fmt = "json",
) -> Response[Any]:
    """Authenticated by a tenant key; naming another tenant in `tenant` is 403."""
    caller = caller_of(request)
    if tenant is not None and tenant != caller.tenant.id:
        raise PermissionDenied("A key can only read its own tenant's usage.", param="tenant")
    store: Store = request.app.state.store
    return await _report(store, caller.tenant.id, first, last, group_by, fmt)


routes = [admin_usage]
