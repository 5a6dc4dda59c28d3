"""Bind and connect addresses (llmhost.net): what engines, the supervisor and serve agree on."""

from __future__ import annotations

import pytest

from llmhost.net import base_url, connect_host, is_loopback, url_host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("192.168.1.4", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8080/v1"), ("", "http://127.0.0.1:8080/v1"), ("::", "http://[::1]:8080/v1"),
     ("::1", "http://[::1]:8080/v1"), ("192.168.1.4", "http://192.168.1.4:8080/v1"),
     ("localhost", "http://localhost:8080/v1")],
)  # fmt: skip
def test_a_wildcard_bind_is_reached_on_loopback(host, url):
    assert base_url(host, 8080) == url
    assert url_host(host).strip("[]") == connect_host(host)
