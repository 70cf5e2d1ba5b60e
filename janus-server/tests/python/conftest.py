"""Starts the real janus-server binary on free ports for the tests."""

import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = pathlib.Path(os.environ.get("JANUS_SERVER_BIN", ROOT / "target" / "release" / "janus-server"))
KEY = "test-key"
MODEL = "shapes-janus"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, process, url, log):
        self.process = process
        self.url = url
        self.log = log

    def get(self, path, key=KEY):
        request = urllib.request.Request(self.url + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()

    def stop(self):
        """SIGTERM, as a service manager would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


def start_server(tmp_dir, *extra):
    port = free_port()
    log = open(tmp_dir / f"server-{port}.log", "w+")
    process = subprocess.Popen(
        [str(BINARY), "--port", str(port), "--api-key", KEY, *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(process, f"http://127.0.0.1:{port}", log)
    deadline = time.time() + 120
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"janus-server exited with {process.returncode}:\n{log.read()}")
        try:
            if server.get("/health", key=None)[0] == 200:
                return server
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.time() > deadline:
            server.stop()
            raise RuntimeError("janus-server did not become healthy")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shipped model behind an API key."""
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: build it with `cargo build --workspace --release`")
    s = start_server(tmp_path_factory.mktemp("server"))
    yield s
    assert s.stop() == 0, "graceful shutdown exits with 0"


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory):
    """The same, with every generation step slowed down so a job can be cancelled mid-way."""
    s = start_server(tmp_path_factory.mktemp("slow"), "--test-step-delay-ms", "60")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def red_circle_png():
    return (ROOT / "docs" / "red-circle.png").read_bytes()
