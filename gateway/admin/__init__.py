"""The admin API, `/admin/v1`, and the tenant-facing `/v1/usage`.

    /admin/v1/tenants …                tenants.py   (keys.py, policies.py under each tenant)
    /admin/v1/tenants/{id}/users/…     subjects.py  data-subject export and erasure
    /admin/v1/policies/dry-run         dryrun.py
    /admin/v1/rails-configs …          rails_configs.py  NeMo configs, uploaded and versioned
    /admin/v1/usage                    usage.py     (also /v1/usage, with a tenant key)
    /admin/v1/audit                    audit.py

Every admin route is behind the `admin_only` route guard (auth.py) and gets an `Admin`
(context.py) to work with. Add `*admin.routes` to the app's route handlers.
"""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.types import ControllerRouterHandler

from gateway.admin import (
    audit,
    dryrun,
    keys,
    policies,
    rails_configs,
    subjects,
    tenants,
    usage,
)
from gateway.admin.auth import ADMIN_SECURITY, admin_only
from gateway.admin.context import admin_context
from gateway.admin.errors import invalid_params

__all__ = ["router", "routes"]

router = Router(
    path="/admin/v1",
    route_handlers=[
        *tenants.routes,
        *keys.routes,
        *policies.routes,
        *dryrun.routes,
        *rails_configs.routes,
        *usage.routes,
        *subjects.routes,
        *audit.routes,
    ],
    guards=[admin_only],
    security=ADMIN_SECURITY,
    dependencies={"admin": Provide(admin_context, sync_to_thread=False)},
    exception_handlers={ValidationException: invalid_params},
    tags=["admin"],
)

routes: list[ControllerRouterHandler] = [router, usage.tenant_usage]
