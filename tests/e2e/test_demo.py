"""``make demo`` against the local stack: it connects through a connect session."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from devstack.certs import PROJECT_ROOT
from devstack.stack import LocalStack

pytestmark = pytest.mark.e2e


def test_the_demo_connects_with_a_connect_session_and_sees_its_events(stack: LocalStack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack.demo", "--mails", "2", "--interval", "0.2",
         "--devhost", stack.devhost_url, "--graphsim", stack.graphsim_url, "--ca-file", str(stack.ca_file),
         "--storage", stack.storage_connection, "--function-key", stack.function_key],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "connect session for demo-owner-" in result.stdout and ": completed, account " in result.stdout
    assert "<- com.m365connector.account.connected  owner demo-owner-" in result.stdout
    assert result.stdout.count("<- com.microsoft.graph.message.created") == 2
