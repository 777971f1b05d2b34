"""The front doors: gRPC, the hosted HTTP API, and the automation and
live-view websockets. They check each request field once, translate between
wire formats and domain objects, and map domain errors to status codes.
Nothing here decides anything about sessions; that is `worker.sessions`."""
