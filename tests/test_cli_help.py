"""The command line teaches: every --help has examples and shows its defaults, every flag has help, and the
shared flags (-v/-q/--log-file anywhere, --json, --device/--strict, --labels, --tolerance) read the same
in every command."""

import argparse
import inspect
import json
import logging

import pytest

from vledge.cli import COMMANDS, _parser
from vledge.cli.logs import configure_logging
from vledge.cli.options import parse_labels, tolerance_fraction
from vledge.errors import ConfigError


def commands():
    parser = _parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, sub.choices


def test_every_command_has_examples_and_every_flag_has_help():
    _, parsers = commands()
    assert set(parsers) == set(COMMANDS)
    for name, p in parsers.items():
        text = p.format_help()
        assert "examples:\n  vledge " + name in text or f"examples:\n  VLEDGE_PORT=9000 vledge {name}" in text, name
        for action in p._actions:
            assert action.help and action.help.strip(), (name, action.dest)


def test_every_default_is_shown_in_help():
    _, parsers = commands()
    shown = 0
    for name, p in parsers.items():
        formatter = p._get_formatter()
        for action in p._actions:
            if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings or action.nargs == 0:
                continue  # a switch's default is its absence
            help_text = formatter._expand_help(action) if action.help else ""
            assert str(action.default) in help_text or "default" in help_text, (name, action.dest, help_text)
            shown += 1
    assert shown > 25


def test_a_switch_shows_no_default():
    _, parsers = commands()
    assert "(default" not in parsers["bench"].format_help().split("--no-scaling", 1)[1].split("--", 1)[0]


@pytest.mark.parametrize("argv, verbosity", [
    (["-q", "targets"], "quiet"),
    (["targets", "-q"], "quiet"),
    (["targets", "--verbose"], "verbose"),
    (["-v", "run", "bundle", "a.png"], "verbose"),
    (["run", "bundle", "a.png", "-q"], "quiet"),
    (["targets"], None),
])
def test_verbosity_before_or_after_the_command(argv, verbosity):
    parser, _ = commands()
    assert getattr(parser.parse_args(argv), "verbosity", None) == verbosity


def test_log_file_before_the_command_survives_the_commands_parser(tmp_path):
    parser, _ = commands()
    args = parser.parse_args(["--log-file", str(tmp_path / "x.log"), "targets"])
    assert args.log_file == str(tmp_path / "x.log")


def test_log_file_keeps_debug_lines_while_the_console_shows_info(tmp_path, capsys):
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers.clear()
    try:
        configure_logging(None, str(tmp_path / "run.log"))
        logging.getLogger("vledge.test").debug("a debug line")
        logging.getLogger("vledge.test").info("an info line")
        logging.getLogger("onnxruntime.quantization").info("noise from another library")
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved
        root.setLevel(level)
        logging.getLogger("vledge").setLevel(logging.NOTSET)
    logged = (tmp_path / "run.log").read_text()
    assert "DEBUG vledge.test: a debug line" in logged and "INFO vledge.test: an info line" in logged
    assert "noise" not in logged
    err = capsys.readouterr().err
    assert "an info line" in err and "a debug line" not in err


def test_json_alone_means_stdout_and_with_a_path_a_file():
    parser, parsers = commands()
    for name in ("run", "targets", "students", "check", "eval", "compress", "train"):
        assert "--json" in parsers[name]._option_string_actions, name
    assert parser.parse_args(["targets", "--json"]).json == "-"
    assert parser.parse_args(["targets", "--json", "t.json"]).json == "t.json"
    assert parser.parse_args(["targets"]).json is None


def test_targets_json_on_stdout_is_the_table(capsys):
    from vledge.cli import main

    assert main(["targets", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert "cpu" in [row["name"] for row in table["targets"]] and "isa" in table["cpu"]


def test_strict_is_offered_wherever_a_device_is_chosen():
    _, parsers = commands()
    for name, p in parsers.items():
        if "--device" in p._option_string_actions and name not in ("eval", "bench"):
            assert "--strict" in p._option_string_actions, name
    assert {"run", "watch", "serve", "check", "annotate", "labels"} <= {
        name for name, p in parsers.items() if "--strict" in p._option_string_actions}


def test_run_shows_as_many_labels_as_the_api_by_default():
    from vledge.runtimes.model import EdgeModel

    parser, _ = commands()
    api_default = inspect.signature(EdgeModel.classify).parameters["top_k"].default
    assert parser.parse_args(["run", "b", "a.png"]).top_k == api_default == 5


def test_labels_read_the_same_in_every_command(tmp_path):
    (tmp_path / "labels.txt").write_text("a cat\n\n a dog \n")
    (tmp_path / "labels.json").write_text('["a car", "a bus"]')
    assert parse_labels("a cat, a dog,") == ["a cat", "a dog"]
    assert parse_labels(f"@{tmp_path / 'labels.txt'}") == ["a cat", "a dog"]
    assert parse_labels(str(tmp_path / "labels.txt")) == ["a cat", "a dog"]
    assert parse_labels(str(tmp_path / "labels.json")) == ["a car", "a bus"]
    assert parse_labels(None) is None
    with pytest.raises(ConfigError, match=r"--labels ' , ' holds no labels; give a comma list"):
        parse_labels(" , ")
    with pytest.raises(ConfigError, match=r"cannot read labels file .*missing.txt"):
        parse_labels(f"@{tmp_path / 'missing.txt'}")
    (tmp_path / "bad.json").write_text('{"names": 3}')
    with pytest.raises(ConfigError, match=r"labels file .*bad.json must hold a JSON list of strings"):
        parse_labels(str(tmp_path / "bad.json"))


def test_tolerance_is_taken_in_the_points_reports_print(capsys):
    parser, _ = commands()
    assert parser.parse_args(["check", "b", "--teacher", "t"]).tolerance == 2.0
    assert tolerance_fraction(parser.parse_args(["check", "b", "--teacher", "t", "--tolerance", "1.5"]).tolerance) == 0.015
    assert parser.parse_args(["compress", "--teacher", "t", "--target", "cpu", "--out", "o"]).tolerance is None
    for points in ("150", "100"):  # 100 would pass any bundle, and the gate refuses a fraction of 1
        with pytest.raises(SystemExit):
            parser.parse_args(["check", "b", "--teacher", "t", "--tolerance", points])
        assert f"top-1 points go from 0 up to (not including) 100, got {points}" in capsys.readouterr().err


def test_serve_strict_from_the_flag_or_the_environment_reaches_the_load():
    from vledge.errors import BackendUnavailableError
    from vledge.serve.holder import ModelHolder
    from vledge.serve.settings import ServeConfig

    parser, _ = commands()
    assert parser.parse_args(["serve", "b"]).strict is None  # unset: the environment or the default decides
    config = ServeConfig.resolve({"bundle": "b", "strict": None}, env={"VLEDGE_STRICT": "1"})
    assert config.strict is True
    seen = {}

    def loader(path, device, **options):
        seen.update(options)
        raise BackendUnavailableError("no cuda here")

    holder = ModelHolder(config, metrics=None, loader=loader)
    with pytest.raises(BackendUnavailableError):
        holder._load()
    assert seen == {"strict": True}


def test_compress_with_a_missing_teacher_leaves_nothing_behind(tmp_path, capsys):
    from vledge.cli import main

    out = tmp_path / "bundle"
    assert main(["compress", "--teacher", str(tmp_path / "nowhere"), "--target", "cpu", "--out", str(out)]) == 2
    assert f"vledge compress: error: --teacher {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
