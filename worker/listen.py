"""Listening and being reached: HOST:PORT settings, the host a URL should
name for a listener, and the gRPC port's TLS. Shared by the worker and the
fleet gateway, which listen the same way."""

from __future__ import annotations

import grpc

from worker.config import Config, ConfigError


def split_host_port(listen: str, field: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{field}: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def grpc_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port, and client-certificate auth with a client CA."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        chain = config.tls_cert_file.read_bytes()
        key = config.tls_key_file.read_bytes()
        client_ca = config.tls_client_ca_file.read_bytes() if config.tls_client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"tls files: cannot read {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def bind_grpc(server: grpc.aio.Server, config: Config) -> int:
    """Listen on grpc_listen, with TLS when configured; returns the port."""
    listen = config.grpc_listen
    credentials = grpc_credentials(config)
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    if not port:
        raise ConfigError(f"grpc_listen: cannot listen on {listen}")
    return int(port)
