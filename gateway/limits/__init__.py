"""Rate limits, budgets and upstream pacing (the `Limiter` behind `gateway.ratelimit`).

    spec.py      the `limits:` config blocks (tenant, key, model, provider, limiter)
    rules.py     Rule / Verdict: one limit resolved for one request
    plan.py      which rules apply to a call, and their store keys
    tokens.py    the token estimate reserved at admission
    backend.py   the storage interface; memory.py and redis.py (+ lua/) implement it
    limiter.py   StoreLimiter: admit, pace, settle, fail modes, headers, errors

Nothing is imported here, so `gateway.config` can use `spec` without import cycles.
"""
