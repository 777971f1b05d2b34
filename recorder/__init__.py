"""Session recording: what runs in the page, what the daemon captures over
CDP, the durable spool, the uploader, and the replay viewer.

This package never imports `worker` or `grpc`: the worker hands it a CDP
connection and a place to write, and maps its errors at the edge.
"""
