"""`llmhost gateway`: one OpenAI-compatible endpoint for every configured model (docs/gateway.md).

`config` (the models and keys files), `placement` (pure: what fits where, whom to evict), `plan`
(`gateway plan`), `deploy` (configured model -> supervised deployment, through `app`), `pool` (load on
demand, queue, evict, TTL, adopt, drain), `server` (the aiohttp routes and the streaming relay),
`metrics` (prometheus_client), `service` (run, detach, status, stop), `__main__` (the detached gateway).
"""
