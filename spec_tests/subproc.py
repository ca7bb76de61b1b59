"""Run Python code in a fresh interpreter: for behaviour fixed at import (environment variables)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_python(code, **env_overrides) -> subprocess.CompletedProcess:
    """Run ``code`` with FDBERT_*/OMP_*/GOMP_* cleared from the environment, then ``env_overrides`` applied;
    the repository root comes first on PYTHONPATH so the package under test is the one imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FDBERT_", "OMP_", "GOMP_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)
