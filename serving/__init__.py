"""The ground floor: everything that serves a model, and nothing that orchestrates.

- artifacts, settings: files with a sha256 and a manifest, written atomically; where the data dir and servers are.
- zoo, corpus, variants, engines: the models, their optimized variants (built once, cached) and the engines that
  run them, each saying which provider ran.
- config, defaults.yaml: bounds of the live knobs, serving defaults, the endpoint's limits (the policy's base).
- app, api, batching, cache, auth, metrics, model_switch: the Ray Serve application and its HTTP API.
- routes, client, network: the API's routes written once, the typed client everything above uses, loopback helpers.
- resolver: read-only lookups of `models:/` URIs in the MLflow registry.

Import rule: `serving` imports nothing from `tasks`, `flows` or `cli` (tests/test_layering.py enforces it).
"""
