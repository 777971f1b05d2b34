"""The session domain: which sessions exist and how many may run (manager),
one session's lifecycle (session), browsers launched ahead of demand (pool),
what is remembered (model, store), and the worker's side of secrets and
recording. It uses `worker.browser`, `worker.cdp` and `worker.network`, and
knows nothing of gRPC, HTTP or websockets."""
