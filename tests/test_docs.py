"""The README's commands: the fast ones run on a tiny bundle, the slow ones parse (and run under `-m slow`).

Every shell line of the README's code blocks that starts with `vledge `, `bash ` or `pip ` is a command.
Placeholder paths (`ckpt/`, `bundle/`, `photo.jpg`, ...) stand for files a workspace folder holds: the
tests' tiny model saved as a checkpoint and exported as a bundle, a few images, a captions file. Commands
run from that folder, so what they write stays there.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundles import build_bundle, tiny_model
from vledge.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STARTS = ("vledge ", "bash ", "pip ")
# Run in the default test run: seconds each on the tiny bundle.
FAST = {"targets", "students", "labels", "eval", "run", "check", "keygen", "sign", "verify", "annotate"}
# Need a live camera or keep serving: their flags are checked, nothing more.
NEVER_RUN = {"watch", "serve"}
# Fashion-MNIST's 10,000 test images are more than a docs test needs.
FEW_SAMPLES = ["--max-samples", "256"]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def readme_commands() -> list[str]:
    """The README's shell commands, continuation lines joined, comments dropped."""
    commands = []
    for language, body in code_blocks(README.read_text()):
        if language not in ("", "bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(STARTS):
                commands.append(shlex.join(shlex.split(line, comments=True)))
    return commands


COMMANDS = readme_commands()
VLEDGE = [c for c in COMMANDS if c.startswith("vledge ")]


def subcommand(command: str) -> str:
    return shlex.split(command)[1]


def flags(command: str) -> list[str]:
    return [token.split("=")[0] for token in shlex.split(command) if token.startswith("--")]


def help_text(command: str) -> str:
    result = subprocess.run([sys.executable, "-m", "vledge", subcommand(command), "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`vledge {subcommand(command)} --help` failed:\n{result.stderr}"
    return result.stdout


def test_the_readme_has_the_commands_this_test_relies_on():
    assert "bash scripts/demo.sh" in COMMANDS and "bash scripts/test.sh" in COMMANDS
    assert FAST <= {subcommand(c) for c in VLEDGE}, "a fast subcommand is no longer in the README's examples"
    assert {"train", "compress"} <= {subcommand(c) for c in VLEDGE}
    assert any(c.startswith("pip install") for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in VLEDGE if subcommand(c) not in FAST], ids=subcommand)
def test_a_slow_command_parses(command):
    text = help_text(command)
    unknown = [flag for flag in flags(command) if flag not in text]
    assert not unknown, f"`{command}` uses flags its --help does not list: {unknown}"


def extras_named(text: str) -> set[str]:
    return {extra.strip() for group in re.findall(r"(?:vledge|\.)\[([a-z,\-]+)\]", text) for extra in group.split(",")}


def test_every_extra_the_readme_names_exists():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = extras_named(README.read_text())
    assert {"onnx", "openvino", "gpu", "compress", "test"} <= named
    assert named <= declared, f"the README names extras pyproject.toml does not declare: {named - declared}"


def test_the_scripts_the_readme_runs_exist():
    scripts = [shlex.split(c)[1] for c in COMMANDS if c.startswith("bash ")]
    assert scripts and all((ROOT / s).is_file() for s in scripts), scripts


PATH_PATTERN = re.compile(r"(?<![\w./-])((?:benchmarks|docs|scripts|tests|vledge|runtimes|compress)/[\w./*-]*[\w*])")
LINK_PATTERN = re.compile(r"\]\(([^)#]+)\)")
# Folders a run writes, not files of the repository.
WRITTEN = ("runs/",)


@pytest.mark.parametrize("document", ["README.md", "docs/benchmarks.md", "docs/design.md"])
def test_every_repository_path_a_document_names_exists(document):
    path = ROOT / document
    text = path.read_text()
    named = {(ROOT, p) for p in PATH_PATTERN.findall(text)}
    named |= {(path.parent, p) for p in LINK_PATTERN.findall(text) if not p.startswith("http")}
    named = {(base, p) for base, p in named if not p.startswith(WRITTEN)}
    assert len(named) >= 4, named
    missing = sorted(p for base, p in named if not any(base.glob(p)))
    assert not missing, f"{document} names paths the repository does not have: {missing}"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding every placeholder the README's fast commands name."""
    from vledge.models.checkpoint import save_dual_encoder

    root = tmp_path_factory.mktemp("readme")
    save_dual_encoder(tiny_model(), root / "ckpt")
    # The fast commands check the bundle against its own teacher; compressing a real CLIP is the slow run's.
    shutil.copytree(root / "ckpt", root / "my-clip")
    build_bundle(root / "bundle")
    (root / "benchmarks").mkdir()
    (root / "benchmarks" / "samples").symlink_to(ROOT / "benchmarks" / "samples")
    rng = np.random.default_rng(0)

    def image(path):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)

    image(root / "photo.jpg")
    (root / "img").mkdir()
    rows = ["path,caption"]
    for i, caption in enumerate(["a photo of a bag.", "a photo of a sneaker.", "a photo of a shirt."] * 2):
        image(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{caption}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    for name in ("bag", "sneaker", "trouser"):
        (root / "photos" / name).mkdir(parents=True)
        for i in range(2):
            image(root / "photos" / name / f"{i}.png")
    (root / "labels.txt").write_text("a bag\na sneaker\na trouser\n")
    return root


def uses_fashion_mnist(argv: list[str]) -> bool:
    """Whether a command reads Fashion-MNIST: named, or the default of check and eval on a checkpoint."""
    if "--data" in argv:
        return argv[argv.index("--data") + 1] == "fashion-mnist"
    return argv[0] in ("eval", "check")


def fast_argv(command: str) -> list[str]:
    argv = shlex.split(command)[1:]
    if argv[0] in ("eval", "check") and "--max-samples" not in argv:
        argv += FEW_SAMPLES
    return argv


@pytest.mark.parametrize("command", [c for c in VLEDGE if subcommand(c) in FAST], ids=subcommand)
def test_a_fast_command_runs(command, workspace, monkeypatch):
    # README order: keygen runs before sign, sign before verify.
    argv = fast_argv(command)
    if uses_fashion_mnist(argv) and not FASHION_DIR.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist")
    monkeypatch.chdir(workspace)
    assert main(argv) == 0, f"`{command}` failed"


def slow_argv(command: str) -> list[str]:
    """A slow command as run for real; pip only resolves, so that the test leaves the environment as it was."""
    argv = shlex.split(command)
    if argv[0] == "pip":
        # From this checkout: "vledge[x]" and ".[x]" both mean the repository root.
        targets = [re.sub(r"^(vledge|\.)(?=\[|$)", str(ROOT), a) for a in argv[2:]]
        return [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", *targets]
    if argv[0] == "bash":
        return ["bash", str(ROOT / argv[1])]
    if argv[1] == "compress":
        argv.append("--overwrite")  # the README's walk-through writes bundle/ again for another target
    return [sys.executable, "-m", *argv]


@pytest.mark.slow
def test_the_slow_commands_run(tmp_path):
    from tiny_clip import make_tiny_clip_folder

    make_tiny_clip_folder(tmp_path / "my-clip")
    rows = [f"{p},a photo of a {p.stem}." for p in sorted((ROOT / "benchmarks" / "samples").glob("*.png"))]
    (tmp_path / "captions.csv").write_text("\n".join(["path,caption"] + rows * 8) + "\n")
    # scripts/test.sh runs this very test file: running it from here would recurse.
    runnable = [c for c in COMMANDS if c != "bash scripts/test.sh"
                and (not c.startswith("vledge ") or subcommand(c) in {"train", "compress"})]
    assert len(runnable) >= 5, runnable
    for command in runnable:
        result = subprocess.run(slow_argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=3600)
        assert result.returncode == 0, f"`{command}` failed:\n{result.stderr[-3000:]}"
