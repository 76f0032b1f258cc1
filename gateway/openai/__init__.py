"""An OpenAI-compatible API on the gateway's HTTP port, under `/openai/v1`:

    OpenAI(base_url="http://HOST:8200/openai/v1", api_key=KEY)

Files, fine-tuning jobs (events, checkpoints), chat completions and models,
field for field as OpenAI's API reference defines them, translated onto the
same RPCs as every other route (no second job system, same keys and tenancy).
It is an aiohttp sub-application with its own middleware, so that every answer,
refusals included, comes in OpenAI's shape.
"""
