"""`POST /admin/v1/policies/dry-run`: what a policy does to a prompt and an answer.

Runs the input stage on the messages (the roles the policy checks) and then the output
stage on the answer, exactly as a call would, but sends nothing anywhere: no provider is
called and nothing is recorded. The answer comes back with pseudonyms of the input stage
restored, as the user would see it. Keyed values (`hash`, pseudonym placeholders) use a
dry-run key of the process: the same in every dry-run of a tenant (so an answer may
quote a placeholder an earlier dry-run showed), never those of live calls. Findings are
counted per stage, guard, entity and action; the matched values are never returned.
Rails that call a model (NeMo self-checks) do call the configured rails model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import Counter
from typing import Any, Literal

from litestar import Litestar, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from gateway.admin.context import Admin
from gateway.admin.policies import accepted, file_policy
from gateway.admin.schemas import DryRunMessage, DryRunRequest, DryRunResult, FindingCount, Verdict
from gateway.errors import GuardUnavailable, InvalidRequest
from rails import Blocked, Finding, GuardContext, GuardFailed, Policy, Stage

__all__ = ["routes"]

PolicySource = Literal["request", "store", "config", "default"]
_SECRET = "dry_run_secret"


async def _policy(admin: Admin, data: DryRunRequest) -> tuple[PolicySource, Policy]:
    if data.tenant is not None:
        await admin.tenant(data.tenant)
    if data.policy is not None:
        return "request", await accepted(admin, data.policy)
    if data.tenant is None:
        raise InvalidRequest("Give a `policy`, a `tenant`, or both.", param="policy")
    active = await admin.store.active_policy(data.tenant)
    if active is not None:
        return "store", await accepted(admin, active.document)
    return file_policy(admin, data.tenant)


def _tenant_key(app: Litestar, tenant: str) -> bytes:
    secret: bytes | None = app.state.get(_SECRET)
    if secret is None:
        secret = app.state[_SECRET] = os.urandom(32)
    return hmac.new(secret, tenant.encode(), hashlib.sha256).digest()


def _counts(stage: Stage, findings: list[Finding]) -> list[FindingCount]:
    counted = Counter((f.guard, f.entity, f.action) for f in findings)
    return [
        FindingCount(stage=stage, guard=g, entity=e, action=a, count=n)
        for (g, e, a), n in sorted(counted.items())
    ]


@post("/policies/dry-run", status_code=200, summary="Run a policy on sample text, offline")
async def dry_run(
    request: Request[Any, Any, Any],
    data: JSONBody[DryRunRequest],
    admin: NamedDependency[Admin],
) -> DryRunResult:
    source, policy = await _policy(admin, data)
    if admin.registry is None:
        raise GuardUnavailable("Rails are not available in this process.")
    pipeline = admin.registry.pipeline(policy)
    tenant = data.tenant or ""
    ctx = GuardContext(
        tenant_id=tenant,
        request_id="dry-run-" + secrets.token_hex(8),
        model="",
        tenant_secret=_tenant_key(request.app, tenant),
    )
    messages = list(data.messages)
    checked = [i for i, m in enumerate(messages) if m.role in policy.roles]
    roles: list[str] = [messages[i].role for i in checked]
    answer: str | None = None
    verdict = Verdict(outcome="allowed")
    stage: Stage = "input"
    output_from: int | None = None
    try:
        texts = await pipeline.run("input", [messages[i].content for i in checked], ctx, roles)
        await pipeline.run_parallel(texts, roles, ctx)
        for i, text in zip(checked, texts, strict=True):
            messages[i] = DryRunMessage(role=messages[i].role, content=text)
        if data.answer is not None:
            stage, output_from = "output", len(ctx.findings)
            (answer,) = await pipeline.run("output", [data.answer], ctx)
    except Blocked as exc:
        verdict = Verdict(outcome="blocked", stage=stage, guard=exc.guard, reason=exc.reason)
    except GuardFailed as exc:
        verdict = Verdict(outcome="failed", stage=stage, guard=exc.guard, reason=exc.reason)
    split = len(ctx.findings) if output_from is None else output_from
    findings = _counts("input", ctx.findings[:split]) + _counts("output", ctx.findings[split:])
    return DryRunResult(
        policy_source=source, messages=messages, answer=answer, findings=findings, verdict=verdict
    )


routes = [dry_run]
