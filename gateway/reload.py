"""Hot reload: every replica follows admin changes through the store's change counter.

Every admin change bumps `store.generation()`. The `Reloader` reads it every
`POLL_S` (one tiny store read per replica, not per request); when it moved, the
authenticator forgets its cached keys and tenants (revoked keys and disabled tenants
are refused from then on), the stored NeMo rails configs are brought up to date on
local disk (`gateway.rails_configs`; guards running a changed one are rebuilt), and
then the policies of every tenant are re-read, so a policy naming a config uploaded in
the same change finds it. Requests in flight finish with what they started with;
nothing restarts. A store that cannot be
read is retried at the next tick, with caches kept as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisClusterException, RedisError

from gateway.policies import TenantPolicies
from gateway.rails_configs import ConfigMirror
from gateway.store.base import Store
from gateway.tasks import stop
from gateway.tenancy import Authenticator

__all__ = ["POLL_S", "Reloader"]

log = logging.getLogger("railgate")

POLL_S = 0.25
"""How often each replica reads the change counter: changes land within a second."""
_UNREACHABLE = (RedisError, RedisClusterException, OSError, TimeoutError)


class Reloader:
    def __init__(
        self,
        store: Store,
        auth: Authenticator,
        policies: TenantPolicies | None,
        rails_configs: ConfigMirror | None = None,
    ) -> None:
        self._store = store
        self._auth = auth
        self._policies = policies
        self._rails_configs = rails_configs
        self._seen: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self) -> None:
        """Load what the store holds now, then follow it (called by the lifespan)."""
        with contextlib.suppress(*_UNREACHABLE):
            await self.check()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reload")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def check(self) -> bool:
        """Reload if the store changed since the last check; True if it did."""
        generation = await self._store.generation()
        if generation == self._seen:
            return False
        self._auth.invalidate()
        if self._rails_configs is not None:
            await self._rails_configs.sync(self._store)
        if self._policies is not None:
            tenants = {t.id for t in await self._store.list_tenants()}
            tenants.update(self._auth.file_tenants)
            await self._policies.reload(self._store, sorted(tenants))
        self._seen = generation
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                async with asyncio.timeout(5):
                    await self.check()
            except _UNREACHABLE as exc:
                if not self._failing:
                    self._failing = True
                    log.warning("reload: store unreachable (%s); retrying", type(exc).__name__)
                continue
            if self._failing:
                self._failing = False
                log.warning("reload: store reachable again")
