"""Headless Chromium driven by Selenium through Debian's chromium-driver, for tests that use the report as a person
would (keys, clicks, the URL)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


# The real socket functions, taken when the tests are collected, before conftest blocks the network: the driver
# talks to chromedriver on the loopback interface, and nothing else is let through.
_REAL = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _host(address) -> str:
    return str(address[0] if isinstance(address, tuple) else address)


def _only_loopback(real, host_of):
    def call(*args, **kwargs):
        host = host_of(*args, **kwargs)
        if host not in LOOPBACK:
            raise OSError(f"network access attempted in tests: {host}")
        return real(*args, **kwargs)

    return call


@contextmanager
def loopback_only() -> Iterator[None]:
    """Sockets to the loopback interface only (the tests block all others), for the WebDriver protocol."""
    import pytest

    connect, connect_ex, create_connection, getaddrinfo = _REAL
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _only_loopback(connect, lambda sock, address: _host(address)))
        mp.setattr(socket.socket, "connect_ex", _only_loopback(connect_ex, lambda sock, address: _host(address)))
        mp.setattr(
            socket, "create_connection", _only_loopback(create_connection, lambda address, *a, **k: _host(address))
        )
        mp.setattr(socket, "getaddrinfo", _only_loopback(getaddrinfo, lambda host, *a, **k: str(host)))
        yield


def missing() -> str | None:
    """Why no browser can be driven here, or None."""
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements-dev.txt)"
    return None


def driver(profile: Path, width: int = 1280, height: int = 900):
    """A fresh headless Chromium with its own profile, logging the page's console; skips (fails under CI) when
    there is no browser."""
    reason = missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        print(f"skipped: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def console_errors(browser) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


# Resolves once every picture that is shown has loaded or failed: the srcs that failed, and how many loaded.
SETTLE = """
var done=arguments[arguments.length-1];
var imgs=[].slice.call(document.images).filter(function(i){return i.offsetParent!==null;});
Promise.all(imgs.map(function(i){return new Promise(function(ok){
 function result(){ok(i.naturalWidth>0?null:i.getAttribute("src"));}
 if(i.complete){result();}else{i.addEventListener("load",result);i.addEventListener("error",result);}});}))
.then(function(bad){done({shown:imgs.length,broken:bad.filter(function(b){return b!==null;}),
 loaded:[].slice.call(document.images).filter(function(i){return i.complete&&i.naturalWidth>0;}).length});});
"""
