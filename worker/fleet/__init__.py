"""The fleet: workers that share a PostgreSQL store, and the gateway that
makes them one endpoint. `member` is a worker's side (its heartbeat and the
copy of its session records); the gateway reads what members write."""
