"""Captioning on many processes: `--devices 2` and torchrun give each file exactly once, in input order, with the
same captions as one process, and `--resume` continues across ranks."""

import os
import socket
import subprocess
import sys

import pytest

from captioner.runs.ranks import Ranks, launcher_size
from captioner.shapes import make_scene
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """11 images and one file that is not an image (an error row): 12 inputs, not a multiple of 2 x batch."""
    root = tmp_path_factory.mktemp("many")
    for i in range(11):
        make_scene("test", i).image.save(root / f"{i:02d}.png")
    (root / "05b.png").write_text("not an image")
    return root


def run(*args: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE", "RANK", "NODE_RANK"):
        env.pop(name, None)
    cmd = [*(launcher or [sys.executable]), "-m", "captioner", "caption", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def one_process(trained_package, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "captions.jsonl"
    done = run(str(trained_package), str(folder), "-o", str(out), "--batch-size", "2", "--workers", "0")
    assert done.returncode == 1, done.stderr  # the non-image
    return out.read_text()


@pytest.mark.slow  # two processes, each importing torch and Lightning (about 15 s)
def test_two_processes_write_each_file_once_in_input_order(trained_package, folder, one_process, tmp_path):
    out = tmp_path / "captions.jsonl"
    done = run(
        str(trained_package), str(folder), "-o", str(out), "--devices", "2", "--batch-size", "2", "--workers", "0"
    )
    assert done.returncode == 1, done.stderr
    assert out.read_text() == one_process  # byte for byte: same rows, same order
    assert done.stderr.count("captioned 11") == 1 and "failed 1," in done.stderr  # said once, by rank 0


@pytest.mark.slow  # two processes, each importing torch and Lightning (about 15 s)
def test_resume_continues_across_ranks(trained_package, folder, one_process, tmp_path):
    out = tmp_path / "captions.jsonl"
    lines = one_process.splitlines(keepends=True)
    out.write_text("".join(lines[:5]) + lines[5][:12])  # killed while writing row 6
    done = run(
        str(trained_package),
        str(folder),
        "-o",
        str(out),
        "--devices",
        "2",
        "--resume",
        "--batch-size",
        "3",
        "--workers",
        "1",
    )
    assert done.returncode == 1, done.stderr
    assert out.read_text() == one_process
    assert "skipped 5" in done.stderr


@pytest.mark.slow  # two processes, each importing torch and Lightning (about 15 s)
def test_torchrun_starts_the_ranks(trained_package, folder, one_process, tmp_path):
    out = tmp_path / "captions.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", f"--master-port={port}"]
    done = run(
        str(trained_package), str(folder), "-o", str(out), "--batch-size", "2", "--workers", "0", launcher=torchrun
    )
    assert done.returncode != 0  # the non-image: exit 1 on every rank, which torchrun reports as a failure
    assert out.read_text() == one_process


@pytest.mark.slow  # two processes, each importing torch and Lightning (about 15 s)
def test_a_refused_output_is_said_on_every_rank(trained_package, folder, tmp_path):
    out = tmp_path / "theirs.jsonl"
    out.write_text('{"id": 1}\n')  # not a row `captioner caption` writes
    done = run(str(trained_package), str(folder), "-o", str(out), "--devices", "2", "--resume")
    assert done.returncode == 2 and "not a row that `captioner caption` writes" in done.stderr
    assert out.read_text() == '{"id": 1}\n'


def test_a_single_process_shares_everything():
    single = Ranks.single()
    assert single.share([1, 2, 3]) == [1, 2, 3] and single.merge([4]) == [4] and single.broadcast(5) == 5
    assert Ranks(rank=1, world=3).share(list(range(8))) == [1, 4, 7]


@pytest.mark.parametrize(
    ("env", "size"),
    [
        ({}, (1, 1)),
        ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "RANK": "0", "LOCAL_RANK": "0"}, (2, 2)),
        ({"SLURM_NTASKS": "8", "SLURM_NNODES": "2", "SLURM_NTASKS_PER_NODE": "4(x2)", "SLURM_JOB_NAME": "cap"}, (4, 2)),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "cap"}, (1, 1)),
    ],
)
def test_the_launchers_sizes_are_read(env, size, monkeypatch):
    for name in [n for n in os.environ if n.startswith("SLURM_") or n in ("WORLD_SIZE", "LOCAL_WORLD_SIZE")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launcher_size() == size
