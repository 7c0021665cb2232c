"""`/admin/v1/rails-configs`: NeMo Guardrails configs, uploaded as JSON and versioned.

    PUT /rails-configs/{name}             {"files": {"config.yml": "…", "rails.co": "…"}}
    GET /rails-configs                    the latest version of each (file names only)
    GET /rails-configs/{name}[?version=n] one version with its files (default: the latest)

An upload becomes a new version only when it passes `gateway.rails_configs`: flat text
files (never Python), YAML limited to rails, prompts and data, and a compile of the
whole config as the engine loads it. Otherwise 422 `invalid_rails_config` lists each
problem's path (`$.name`, `$.files`, `$.files["rails.co"]`) and reason, and the
config's versions stay as they were. A name the engine already finds elsewhere (a
bundled config, `rails.configs_dir`) is 409: the stored config would never run.

Policies name a stored config like a bundled one (`nemo: {config: <name>}`) and always
run its latest version: the replica answering the upload has it on disk before it
answers, every other replica within a second (`gateway.reload`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Request, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from gateway.admin.context import Admin
from gateway.admin.errors import Conflict, InvalidRailsConfig
from gateway.admin.schemas import (
    RailsConfigInfo,
    RailsConfigList,
    RailsConfigOut,
    RailsConfigUpload,
)
from gateway.errors import NotFound
from gateway.rails_configs import ConfigMirror, compiled, shadowed, upload_problems
from gateway.store.base import RailsConfigVersion

__all__ = ["routes"]


def _info(config: RailsConfigVersion) -> RailsConfigInfo:
    return RailsConfigInfo(
        name=config.name,
        version=config.version,
        created_at=config.created_at,
        author=config.author,
        file_names=sorted(config.files),
    )


@put("/rails-configs/{name:str}", summary="Upload a NeMo rails config (a new version)")
async def set_rails_config(
    name: FromPath[str],
    data: JSONBody[RailsConfigUpload],
    admin: NamedDependency[Admin],
    request: Request[Any, Any, Any],
) -> RailsConfigInfo:
    problems = upload_problems(name, data.files)
    if problems:
        raise InvalidRailsConfig(problems)
    elsewhere = shadowed(name, admin.settings.rails.configs_dir)
    if elsewhere is not None:
        raise Conflict(f"The name is taken by {elsewhere}.", param="name")
    problems = await compiled(name, data.files)
    if problems:
        raise InvalidRailsConfig(problems)
    config = await admin.store.add_rails_config(name, data.files, admin.actor, time.time())
    mirror: ConfigMirror | None = request.app.state.get("rails_configs")
    if mirror is not None:  # on disk here before the answer: a policy may name it next
        await mirror.sync(admin.store)
    await admin.changed("rails_config.set", name, version=config.version)
    return _info(config)


@get("/rails-configs", summary="The latest version of every stored rails config")
async def list_rails_configs(admin: NamedDependency[Admin]) -> RailsConfigList:
    return RailsConfigList(data=[_info(c) for c in await admin.store.rails_configs()])


@get("/rails-configs/{name:str}", summary="A rails config with its files (default: latest)")
async def get_rails_config(
    name: FromPath[str],
    admin: NamedDependency[Admin],
    version: Annotated[int | None, QueryParameter(ge=1, le=2**31)] = None,
) -> RailsConfigOut:
    config = await admin.store.rails_config(name, version)
    if config is None:
        if version is not None and await admin.store.rails_config(name) is not None:
            raise NotFound("Unknown rails config version.", param="version")
        raise NotFound("Unknown rails config.", param="name")
    return RailsConfigOut(**msgspec.structs.asdict(_info(config)), files=config.files)


routes = [set_rails_config, list_rails_configs, get_rails_config]
