"""No spin-waiting by default: OMP_WAIT_POLICY=PASSIVE before torch loads (the user's value wins), and ONNX
Runtime sessions opened without spinning threads."""

import os
import subprocess
import sys

from bundles import build_bundle
from vledge.spin_wait import prefer_passive_waits


def test_passive_is_set_only_when_unset_and_torch_is_not_loaded(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    env = {}
    assert prefer_passive_waits(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_waits(mine) is False and mine == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setitem(sys.modules, "torch", object())
    late = {}
    assert prefer_passive_waits(late) is False and late == {}


def test_the_cli_sets_it_before_any_command_imports_torch():
    script = ("import os, sys; from vledge.cli import main; main(['targets', '--json']); "
              "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'), file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "False PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stderr.strip().splitlines()[-1] == "False ACTIVE"


def test_onnx_runtime_sessions_do_not_spin(tmp_path):
    import vledge

    model = vledge.load(build_bundle(tmp_path / "bundle"), device="cpu")
    sessions = model.runtime._sessions
    assert set(sessions) == {"image", "text"}
    for session in sessions.values():
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_importing_vledge_sets_it_too_so_the_python_api_does_not_spin():
    script = "import os, sys, vledge; import torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PASSIVE"
