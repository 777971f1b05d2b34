"""The Kubernetes manifests as the tests read them: rendered by `kubectl
kustomize`, an overlay as shipped or the base with chosen components (the
way a user composes their own overlay), and the worker's parts picked out
of the result."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from helpers.workers import ROOT

K8S = ROOT / "deploy" / "k8s"


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert Path(found).exists(), "kubectl missing: bash deploy/run.sh test provides it"
    return found


def _kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def render(overlay: str) -> list[dict[str, Any]]:
    return _kustomize(K8S / "overlays" / overlay)


def render_with(*components: str) -> list[dict[str, Any]]:
    """The base with `components` (names under deploy/k8s/components)."""
    with tempfile.TemporaryDirectory() as tmp:
        # kustomize takes only relative paths to what it builds on.
        rel = lambda p: os.path.relpath(p, tmp)  # noqa: E731
        lines = [
            "apiVersion: kustomize.config.k8s.io/v1beta1",
            "kind: Kustomization",
            f"resources: [{rel(K8S / 'base')}]",
            "components: [" + ", ".join(rel(K8S / "components" / c) for c in components) + "]",
        ]
        (Path(tmp) / "kustomization.yaml").write_text("\n".join(lines) + "\n")
        return _kustomize(Path(tmp))


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The worker's ConfigMap (the dashboard ConfigMap is the other one)."""
    return next(
        d["data"] for d in docs if d["kind"] == "ConfigMap" and "SANDBOX_STATE_DIR" in d["data"]
    )


def worker_pod(docs: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The ConfigMap's environment, the pod spec and the worker container."""
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return settings(docs), pod, pod["containers"][0]
