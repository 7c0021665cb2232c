"""NeMo Guardrails as a Railgate guard kind (`nemo:` in a policy).

`options` (parsed with the policy, no NeMo import), `engine` (one `LLMRails` per distinct
config, built at start-up, offline), `model` (NeMo's LLM calls through the gateway's
rails model), `guard` (input/output checks and streaming output rails), `configs/`
(bundled configurations usable by name).
"""
