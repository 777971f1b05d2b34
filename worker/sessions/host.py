"""What every session of this worker shares, built once when the worker
starts: its settings, the store, metrics, the proxy relay, the CA store
cache, the secret resolver, the recorder, and what the host allows
(Chromium's sandbox, cgroups, network namespaces). Sessions, pooled browsers
and the manager take this one bundle instead of a dozen arguments."""

from __future__ import annotations

import dataclasses

from certstore.nssdb import NSSStores
from recorder.service import Recorder
from worker.browser import probe, users
from worker.browser.cgroups import Cgroups
from worker.config import Config, ConfigError
from worker.metrics import Metrics
from worker.network import netns
from worker.network.control import RelayControl
from worker.sessions import session_recording
from worker.sessions.s3_objects import S3Objects
from worker.sessions.secret_resolver import SecretResolver
from worker.sessions.store import Store


@dataclasses.dataclass(frozen=True)
class HostServices:
    config: Config
    store: Store
    metrics: Metrics
    relay: RelayControl | None
    trust: NSSStores
    secrets: SecretResolver
    recorder: Recorder
    sandbox: users.Plan
    cgroups: Cgroups | None
    objects: S3Objects  # extensions and policy files, read at Start
    # Why browsers cannot have policy files of their own here ("": they can).
    policies_refused: str

    @classmethod
    def build(
        cls, config: Config, store: Store, relay: RelayControl | None, metrics: Metrics
    ) -> HostServices:
        """Probe the host and build the shared parts; a setting the host
        cannot honour is a ConfigError naming it."""
        if config.network_isolation == "namespace" and (why := netns.probe()):
            raise ConfigError(f"network_isolation: 'namespace', but {why}")
        return cls(
            config=config,
            store=store,
            metrics=metrics,
            relay=relay,
            trust=NSSStores(config.state_dir / "nss-cache"),
            secrets=SecretResolver(config.secrets_dir, config.secret_timeout_s),
            recorder=session_recording.recorder(config, metrics),
            sandbox=probe.sandbox_plan(config),
            cgroups=probe.session_cgroups(config),
            objects=S3Objects(
                config.state_dir / "s3-cache",
                config.s3_endpoint_url,
                config.s3_object_timeout_s,
                config.s3_object_cache_mb,
            ),
            policies_refused=probe.policy_views(),
        )
