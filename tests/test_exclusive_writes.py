"""Writers that race: two bundles written to one --out, two compress runs sharing one work folder; and the
modes a bundle is written with, so a service user can read one built by root."""

import os
import stat
import subprocess
import sys
import threading

import pytest

import vledge
from bundles import build_bundle
from vledge.bundle_files import read_manifest
from vledge.compress.bundle import writer as bundle_writer
from vledge.compress.workdir import WorkDir
from vledge.errors import BundleError, ConfigError


def test_two_writers_to_one_out_one_wins_and_the_other_says_so(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    both_written = threading.Barrier(2, timeout=60)
    set_modes = bundle_writer._set_modes

    def wait_for_the_other(folder, shared):
        set_modes(folder, shared)
        both_written.wait()  # both staging folders complete, neither renamed yet

    monkeypatch.setattr(bundle_writer, "_set_modes", wait_for_the_other)
    results = []

    def write(config):
        try:
            bundle_writer.write_bundle(out, **{**common(), "config": config})
            results.append(("ok", config["writer"]))
        except BundleError as exc:
            results.append(("refused", str(exc)))
        except BaseException as exc:
            results.append(("error", repr(exc)))

    common()  # the towers exported once, before the threads
    writers = [threading.Thread(target=write, args=({"writer": w},)) for w in ("a", "b")]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert sorted(r[0] for r in results) == ["ok", "refused"], results
    winner = next(r[1] for r in results if r[0] == "ok")
    message = next(r[1] for r in results if r[0] == "refused")
    assert "appeared while this bundle was being written (another writer?); it was left as it is" in message
    assert read_manifest(out).config == {"writer": winner}  # the winner's bundle, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the loser's staging folder removed


def common():
    from bundles import compiled_labels, exported_towers, tiny_model

    model = tiny_model()
    return dict(towers=exported_towers(), tokenizer=model.tokenizer, preprocess=model.preprocess, target="cpu",
                precision="fp32", embed_dim=model.embed_dim, logit_scale=1.0, labels=compiled_labels(model),
                config={}, metrics={}, provenance={})


def test_a_folder_made_by_anyone_meanwhile_is_never_replaced(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    set_modes = bundle_writer._set_modes

    def someone_else_writes(folder, shared):
        set_modes(folder, shared)
        out.mkdir()
        (out / "photo.jpg").write_bytes(b"precious")

    monkeypatch.setattr(bundle_writer, "_set_modes", someone_else_writes)
    with pytest.raises(BundleError, match=r"bundle appeared while this bundle was being written"):
        build_bundle(out)
    assert (out / "photo.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_work_folder_is_held_by_one_run(tmp_path):
    first = WorkDir(tmp_path / "out.work")
    with pytest.raises(ConfigError, match=r"work folder .*out.work is in use by another vledge compress run; wait for it "
                                          r"to finish, or give this run its own --work-dir"):
        WorkDir(tmp_path / "out.work")
    first.close()
    WorkDir(tmp_path / "out.work").remove()
    assert not (tmp_path / "out.work").exists()


def test_a_second_compress_sharing_the_work_folder_stops_before_touching_it(tmp_path):
    from vledge.compress import compress

    work = tmp_path / "out.work"
    (work / "distill").mkdir(parents=True)
    (work / "distill" / "done.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vledge.compress.workdir import WorkDir\n"
                               "w = WorkDir(__import__('pathlib').Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(60)", str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for resume, overwrite in ((True, False), (False, True)):
            with pytest.raises(ConfigError, match=r"is in use by another vledge compress run"):
                compress(tmp_path / "no-teacher", out=tmp_path / "out", resume=resume, overwrite=overwrite)
        assert (work / "distill" / "done.json").read_text() == "{}"  # the running one's stages untouched
    finally:
        holder.kill()
        holder.wait()
    WorkDir(work).close()  # a killed holder's lock is gone with it


@pytest.mark.parametrize("shared, dirs, files", [(True, 0o755, 0o644), (False, 0o700, 0o600)])
def test_bundles_are_readable_by_other_users_unless_asked(tmp_path, shared, dirs, files):
    old = os.umask(0o077)  # a root shell with a strict umask
    try:
        out = bundle_writer.write_bundle(tmp_path / "bundle", **{**common(), "shared": shared})
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == dirs
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {files}
    vledge.load(out)
