"""The command line (`sandbox-worker`): the daemon's entry point, the gRPC
client commands, the replay writer and the load generator. Clients only:
nothing here is imported by the daemon."""
