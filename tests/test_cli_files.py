"""File-system failures of the command line: one line and exit 2, never a traceback or a partial file."""

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from nuker_mge_plugin import MGE, nuker_to_mge
from nuker_mge_plugin._files import StagedFiles, atomic_write, check_output_dir, check_output_file
from nuker_mge_plugin.cli import main

ARGS = ["--sigma-b", "5e4", "--r-b", "1.2", "--alpha", "2", "--beta", "1.9", "--gamma", "0.3", "--qobs", "0.7",
        "--distance", "11.4"]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A scratch folder holding a folder ``adir`` and a file ``afile``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("keep me")
    return tmp_path


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _one_line(capsys, rc, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("nuker-mge: error: "), (rc, err)
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


CASES = [
    (["convert", *ARGS, "-o", "adir"], "adir is a directory"),
    (["convert", *ARGS, "-o", "nodir/x.txt"], "the folder nodir does not exist"),
    (["convert", *ARGS, "-o", "afile/x.txt"], "afile is not a folder"),
    (["convert", *ARGS, "-o", "i.txt", "--plot", "nodir/x.png"], "--plot nodir/x.png"),
    (["convert", *ARGS, "-o", "i.txt", "--plot", "adir"], "--plot adir is a directory"),
    (["convert", *ARGS, "-o", "i.txt", "--plot", "figure"], "give the file an extension"),
    (["convert", *ARGS, "-o", "i.txt", "--plot", "figure.xyz"], "'.xyz' is not a figure format"),
    (["convert", *ARGS, "-o", "i.png", "--plot", "i.png"], "same file"),
    (["demo", "--out", "afile"], "--out afile exists and is not a folder"),
    (["demo", "--out", "afile/sub"], "is not a folder"),
    (["mock", "no_such.toml", "--out", "x.npz"], "no_such.toml"),
    (["fit", "no_such.toml"], "no_such.toml"),
]


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_file_errors_one_line_exit_2_nothing_written(workdir, capsys, argv, needle):
    before = _listing(workdir)
    rc = main(argv)
    _one_line(capsys, rc, needle)
    assert _listing(workdir) == before
    assert (workdir / "afile").read_text() == "keep me"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_unwritable_folder_proc(workdir, capsys):
    rc = main(["convert", *ARGS, "-o", "/proc/x.txt"])
    _one_line(capsys, rc, "/proc/x.txt")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder(workdir, capsys):
    ro = workdir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc = main(["convert", *ARGS, "-o", str(ro / "x.txt")])
        _one_line(capsys, rc, "not writable")
    finally:
        ro.chmod(0o755)


def test_a_real_process_has_no_traceback(workdir):
    proc = subprocess.run([sys.executable, "-m", "nuker_mge_plugin.cli", "convert", *ARGS, "-o", "adir"],
                          capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "nuker-mge: error: -o/--output adir is a directory: give a file name"


@pytest.mark.parametrize("extra", [["--inc", "30"], ["--inc", "nan"], ["--inc", "120"],
                                   ["--inc", "70", "--mbh", "-1"], ["--alpha", "-1"]])
def test_no_partial_table_when_a_later_check_fails(workdir, capsys, extra):
    args = list(ARGS)
    if extra[0] == "--alpha":
        args[args.index("--alpha") + 1] = extra[1]
        extra = []
    rc = main(["convert", *args, "-o", "i.txt", "--plot", "i.png", *extra])
    _one_line(capsys, rc)
    assert not (workdir / "i.txt").exists() and not (workdir / "i.png").exists()
    assert _listing(workdir) == ["adir", "afile"]  # no temporary file either


def test_failing_plot_leaves_no_table_and_keeps_old_files(workdir, capsys, monkeypatch):
    """A figure that fails half-way: the table is not written, an older table and figure survive."""
    import nuker_mge_plugin.plotting as plotting

    (workdir / "i.txt").write_text("old table")
    (workdir / "i.png").write_text("old figure")

    def broken(mge, path, **kw):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise ValueError("the figure could not be drawn")

    monkeypatch.setattr(plotting, "plot_mge_summary", broken)
    rc = main(["convert", *ARGS, "-o", "i.txt", "--plot", "i.png", "--inc", "70"])
    _one_line(capsys, rc, "could not be drawn")
    assert (workdir / "i.txt").read_text() == "old table"
    assert (workdir / "i.png").read_text() == "old figure"
    assert _listing(workdir) == ["adir", "afile", "i.png", "i.txt"]


def test_success_writes_both_with_normal_permissions(workdir, capsys):
    old = os.umask(0o022)
    try:
        assert main(["convert", *ARGS, "-o", "i.txt", "--plot", "i.png", "--inc", "70"]) == 0
    finally:
        os.umask(old)
    for name in ("i.txt", "i.png"):
        assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o644, name
    assert MGE.load(workdir / "i.txt").table.shape == (64, 3)
    assert _listing(workdir) == ["adir", "afile", "i.png", "i.txt"]


def test_mge_save_is_atomic(tmp_path, monkeypatch):
    mge = nuker_to_mge(sigma_b=5e4, r_b=1.2, alpha=2, beta=1.9, gamma=0.3, qobs=0.7, distance=11.4)
    path = tmp_path / "m.txt"
    path.write_text("previous")

    def failing_savetxt(fname, *a, **k):
        with open(fname, "w") as f:
            f.write("# half a table\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savetxt", failing_savetxt)
    with pytest.raises(OSError):
        mge.save(path)
    assert path.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["m.txt"]
    monkeypatch.undo()
    mge.save(path)
    assert np.array_equal(MGE.load(path).table, mge.table)
    assert [p.name for p in tmp_path.iterdir()] == ["m.txt"]


def test_helpers(tmp_path):
    with pytest.raises(ValueError, match="give a file name"):
        check_output_file("", "-o")
    assert check_output_file(tmp_path / "x.txt", "-o") == str(tmp_path / "x.txt")
    assert check_output_dir(tmp_path / "new" / "deeper", "--out") == str(tmp_path / "new" / "deeper")
    with StagedFiles() as files:
        tmp = files.stage(tmp_path / "a.txt", "-o")
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".txt")
        with pytest.raises(ValueError, match="nothing was written"):
            files.commit()  # an empty staged file is an error, not an empty output
    assert list(tmp_path.iterdir()) == []
    atomic_write(tmp_path / "b.txt", lambda p: open(p, "w").write("b"))
    assert (tmp_path / "b.txt").read_text() == "b" and len(list(tmp_path.iterdir())) == 1
