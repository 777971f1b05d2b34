"""The proxy relay: a process of its own (`python -m worker.network.relay`)
that routes each session's traffic to its proxies (routing), moves bytes
(wire), and is driven by the daemon through a control socket (control).
Network namespaces for isolated sessions live here too (netns)."""
