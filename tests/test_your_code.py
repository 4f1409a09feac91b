"""Your own code, files and setup, end to end through `gpujobs launch`: a code folder sent with
its .gitignore honoured, a setup run once per node and skipped on the next launch, weights and
embeddings given by `files:` (a local file and a URL) cached on the node, on this machine and on
a lab machine over a real loopback sshd (no root: the setup's pip installs into a venv)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec

TRAIN_PY = """
import json, os, pathlib, sys
config = json.loads(pathlib.Path("config.json").read_text())
sent = sorted(str(p) for p in pathlib.Path(".").rglob("*") if p.is_file())
out = pathlib.Path(os.environ["GPUJOBS_CKPT_DIR"])
(out / "result.json").write_text(json.dumps({"lr": config["lr"], "sent": sent, "cwd": os.getcwd(),
                                             "argv": sys.argv[1:]}))
print("trained with lr", config["lr"])
"""


def code_folder(root: Path) -> Path:
    """A project as users have them: code, a config, a requirements file, a .gitignore that
    keeps data and weights out, data and a git store that must not travel."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "big.bin").write_bytes(b"\0" * 2_000_000)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / "notes").mkdir()
    (root / "notes" / "scratch.log").write_text("local only")
    (root / "train.py").write_text(TRAIN_PY)
    (root / "config.json").write_text('{"lr": 0.01}')
    (root / "requirements.txt").write_text("")
    (root / ".gitignore").write_text("data/\n*.pt\n")
    (root / ".gpujobsignore").write_text("notes/\n")
    return root


def result_of(job: dict) -> dict:
    return json.loads((Path(job["runs_dir"]) / "result.json").read_text())


def last_job() -> dict:
    return json.loads(gpujobs_cli("status", "--json").stdout)[0]


def test_a_command_job_runs_in_its_code_folder_and_its_setup_runs_once(tmp_path: Path) -> None:
    code_folder(tmp_path / "project")
    counter = tmp_path / "setup-runs.txt"
    spec = write_spec(
        tmp_path,
        f"""
        name: own-code
        workdir: ./project
        setup: |
          echo "installing from $(ls requirements.txt)"
          echo ran >> {counter}
        command: python train.py --epochs 1
        """,
    )
    first = gpujobs_cli("launch", str(spec), timeout=200)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "installing from requirements.txt" in first.stdout, "the setup's output streams"
    assert "trained with lr 0.01" in first.stdout
    result = result_of(last_job())
    assert result["argv"] == ["--epochs", "1"] and result["cwd"].endswith("/src")
    assert sorted(result["sent"]) == [
        ".gitignore",
        ".gpujobsignore",
        "config.json",
        "requirements.txt",
        "train.py",
    ], "data/, .git/ and what .gpujobsignore names stayed home"

    second = gpujobs_cli("launch", str(spec), timeout=200)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "setup: already done on this node" in second.stderr
    assert counter.read_text().count("ran") == 1, "the second launch skipped the setup"

    # A changed requirements file makes the setup run again.
    (tmp_path / "project" / "requirements.txt").write_text("numpy\n")
    third = gpujobs_cli("launch", str(spec), timeout=200)
    assert third.returncode == 0, third.stderr[-2000:]
    assert counter.read_text().count("ran") == 2


def test_a_failing_setup_fails_the_job_while_setting_up_with_its_tail(tmp_path: Path) -> None:
    code_folder(tmp_path / "project")
    spec = write_spec(
        tmp_path,
        """
        name: bad-setup
        workdir: ./project
        setup: |
          echo "Collecting torchvision==99"
          echo "ERROR: No matching distribution found for torchvision==99" >&2
          exit 1
        command: python train.py
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=200)
    assert done.returncode == 1
    job = last_job()
    assert job["state"] == "FAILED" and "setup failed (exit 1)" in job["error"]
    assert "No matching distribution found for torchvision==99" in job["error"]
    detail = json.loads(gpujobs_cli("status", "--json", job["id"]).stdout)
    states = [event["state"] for event in detail["events"]]
    assert "RUNNING" not in states and "SETTING_UP" in states


def test_a_big_code_folder_is_called_out(tmp_path: Path) -> None:
    project = code_folder(tmp_path / "project")
    (project / "dataset.npy").write_bytes(b"\1" * (101 * 1024 * 1024))
    spec = write_spec(tmp_path, "name: big-code\nworkdir: ./project\ncommand: 'true'\n")
    done = gpujobs_cli("launch", str(spec), timeout=200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is your data inside workdir?" in done.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on loopback, as a dataset host or a model zoo would."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_files_reach_the_node_once_and_args_name_them_by_node_path(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    url, folder = served
    (folder / "glove.6B.50d.txt").write_text("the 0.418 0.24968\n")
    weights = tmp_path / "weights" / "model.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"pretend weights" * 1000)
    spec = write_spec(
        tmp_path,
        f"""
        name: with-files
        files:
          /files/model.pth: ./weights/model.pth
          embeddings/glove.txt: {url}/glove.6B.50d.txt
          vocab: ./weights
        command: >-
          sha256sum "$GPUJOBS_FILES"/files/model.pth | cut -d' ' -f1 > "$GPUJOBS_CKPT_DIR/sum";
          cat embeddings/glove.txt > "$GPUJOBS_CKPT_DIR/glove"; ls vocab > "$GPUJOBS_CKPT_DIR/ls"
        """,
    )
    first = gpujobs_cli("launch", str(spec), timeout=200)
    assert first.returncode == 0, first.stderr[-2000:]
    runs = Path(last_job()["runs_dir"])
    assert (runs / "sum").read_text().strip() == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (runs / "glove").read_text() == "the 0.418 0.24968\n"
    assert (runs / "ls").read_text().split() == ["model.pth"]
    assert "files: 3 (3 sent, 0 already on the node)" in first.stderr

    second = gpujobs_cli("launch", str(spec), timeout=200)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "files: 3 (0 sent, 3 already on the node)" in second.stderr


def test_a_missing_file_or_folder_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, "name: nofile\ncommand: 'true'\nfiles: {/files/w.pth: ./nope.pth}\n"
    )
    done = gpujobs_cli("launch", str(spec), timeout=60)
    assert done.returncode == 2 and "files./files/w.pth" in done.stderr
    assert "does not exist" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    spec = write_spec(tmp_path, "name: nocode\ncommand: 'true'\nworkdir: ./src\n", "b.yaml")
    done = gpujobs_cli("launch", str(spec), timeout=60)
    assert done.returncode == 2 and "workdir:" in done.stderr and "is not a folder" in done.stderr
    assert json.loads(gpujobs_cli("status", "--json").stdout) == []


def wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A real, minimal pure-Python wheel (what `pip wheel` makes), so a setup can
    `pip install --no-index` it with no network."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            data = text.encode()
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{member},sha256={digest.decode()},{len(data)}")
        record.append(f"{name}-{version}.dist-info/RECORD,,")
        archive.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_over_ssh_the_setup_pip_installs_into_a_venv_without_root(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    project = code_folder(tmp_path / "project")
    wheels = project / "wheels"
    wheels.mkdir()
    wheel(wheels, "labtools")
    (project / "requirements.txt").write_text("labtools==1.0\n")
    (project / "train.py").write_text(
        TRAIN_PY + "import labtools; print('labtools', labtools.VERSION)\n"
    )
    remote_root = tmp_path / "lab-machine"
    spec = write_spec(
        tmp_path,
        f"""
        name: lab-code
        providers: [ssh]
        ssh: {{hosts: ["{sshd.target}"], identity_file: {sshd.client_key},
              workdir: {remote_root}}}
        workdir: ./project
        setup: pip install --no-index --find-links wheels -r requirements.txt
        command: python train.py
        """,
    )
    first = gpujobs_cli("launch", str(spec), timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Successfully installed labtools-1.0" in first.stdout
    assert "labtools 1.0" in first.stdout, "the command ran in the venv the setup filled"
    second = gpujobs_cli("launch", str(spec), timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "setup: already done" in second.stderr and "labtools 1.0" in second.stdout
    assert "Successfully installed" not in second.stdout
    [venv] = [p for p in (remote_root / "venvs").iterdir() if p.name.startswith("setup-")]
    assert list(venv.glob("lib/python*/site-packages/labtools"))
    assert not any((remote_root / "work").iterdir()), "the jobs' folders are gone"


def test_transfer_loads_weights_sent_as_files_and_keeps_its_frozen_backbone(
    tmp_path: Path,
) -> None:
    import torch

    from tests.jobs.test_transfer import save_weights_in_subprocess

    weights = tmp_path / "weights" / "resnet18-test.pth"
    weights.parent.mkdir()
    save_weights_in_subprocess(weights, "resnet18")
    spec = write_spec(
        tmp_path,
        """
        name: transfer-files
        workload: transfer
        files: {/files/resnet18.pth: ./weights/resnet18-test.pth}
        args: {weights: /files/resnet18.pth, arch: resnet18, image_size: 32, batch_size: 16,
               synthetic: 60, epochs: 2, frozen_epochs: 1, seed: 1, threads: 1}
        checkpoints: {every_minutes: 60, keep: 10}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resnet18 (weights resnet18.pth (120 tensors))" in done.stdout, "by its node path"
    assert "warning:" not in done.stderr, "weights were given: nothing to warn about"
    runs = Path(last_job()["runs_dir"])
    assert (runs / "model_weights.pt").is_file() and (runs / "confusion_matrix.png").is_file()
    first = sorted(runs.glob("ckpt-*.pt"))[0]  # the end of the frozen stage
    model = torch.load(first, map_location="cpu", weights_only=False)["models"]["model"]
    file = torch.load(weights, weights_only=True)
    for key, tensor in file.items():
        if not key.startswith("fc."):  # the new head is trained; the backbone is the file's
            assert torch.equal(model[key], tensor), key


def test_the_kaggle_fake_and_real_news_download_trains_as_it_comes(tmp_path: Path) -> None:
    from tests.jobs.test_text_classifier import write_fake_and_real

    write_fake_and_real(tmp_path / "news")
    spec = write_spec(
        tmp_path,
        """
        name: fake-news
        workload: text_classifier
        dataset: {source: ./news}
        args: {epochs: 1, max_len: 32, hidden: 16, batch_size: 32, threads: 1, seed: 1}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one CSV per class (Fake.csv -> fake, True.csv -> true)" in done.stdout
    assert "epoch 1/1" in done.stdout
