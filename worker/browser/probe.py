"""What this host allows a browser, decided once when the worker starts:
Chromium's sandbox (and a user per browser), and per-session cgroups. Each
decision is logged with its reason, so an operator sees at start why a
protection is off."""

from __future__ import annotations

import structlog

from worker.browser import policies, users
from worker.browser.cgroups import CgroupLimits, Cgroups
from worker.config import Config, ConfigError

log = structlog.get_logger(__name__)


def sandbox_plan(config: Config) -> users.Plan:
    """Chromium's sandbox, and a uid per browser when the daemon is root."""
    try:
        # Live and pooled browsers are bounded by max_sessions; closing ones
        # keep their uid until their sweep is done, hence the headroom.
        plan = users.plan(
            config.browser_sandbox, config.browser_uid_base, 2 * config.max_sessions + 16
        )
    except users.SandboxUnavailable as exc:
        raise ConfigError(f"browser_sandbox: 'on', but {exc}") from None
    if plan.chromium_sandbox:
        log.info("worker.browser_sandbox", users="per browser" if plan.uids else "daemon's")
    else:
        log.warning("worker.browser_sandbox_off", reason=plan.reason)
    return plan


def session_cgroups(config: Config) -> Cgroups | None:
    """A cgroup per session, when limits are asked for and the host has room
    (or `session_limits` says not to use them). Without one, a memory limit
    falls to the sampling watch, which the session manager runs."""
    wanted = CgroupLimits(config.session_memory_mb * 1024 * 1024, config.session_cpus)
    if not wanted.memory_bytes and not wanted.cpus:
        return None  # not asked for: nothing to say
    if config.session_limits == "sampled":
        log.info("worker.session_limits", by="sampling", memory_mb=config.session_memory_mb)
        return None
    name = config.session_tmp_root.name  # one worker's, per state directory
    found = Cgroups.discover(name, wanted)
    if isinstance(found, str):
        if config.session_limits == "cgroup":
            raise ConfigError(f"session_limits: 'cgroup', but {found}")
        log.warning(
            "worker.session_limits_off" if not wanted.memory_bytes else "worker.session_limits",
            by="sampling" if wanted.memory_bytes else "none",
            memory_mb=config.session_memory_mb,
            cpu_limit="off" if wanted.cpus else "not asked",
            reason=f"no cgroups: {found}",
        )
        return None
    log.info(
        "worker.session_limits",
        by=f"cgroup v{found.version}",
        memory_mb=config.session_memory_mb,
        cpus=config.session_cpus,
    )
    return found


def policy_views() -> str:
    """Whether a browser can have enterprise policies of its own here: why
    not, or ""."""
    why = policies.probe()
    if why:
        log.info("worker.enterprise_policies_off", reason=why)
    return why
