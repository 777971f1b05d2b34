"""What the tests share: workers in-process and as daemons, the clients' helpers,
the real upstreams (origins, proxies, S3, Secrets Manager), bounded waits and
the faults table. Test modules import from here, never from each other."""
