"""Custom root CA trust for sessions: validate PEM, build NSS stores, bundles.

Pure of the worker: no gRPC, no sessions. `validate` turns a secret's text
into checked CA certificates or a `CertificateError` saying why not; `nssdb`
builds a session's NSS trust store (what Chromium on Linux trusts besides
its built-in roots); `bundle` writes the PEM file other clients read.
"""
