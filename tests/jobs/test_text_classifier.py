"""text_classifier: CSV parsing, tokenizer/vocabulary, GloVe loading, and end-to-end runs
of ``python -m jobs.text_classifier`` on tiny generated data."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import torch

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.errors import DataError
from jobs.common.metrics import read_metrics
from jobs.text_classifier.cli import main
from jobs.text_classifier.csvfile import read_table
from jobs.text_classifier.examples import read_examples
from jobs.text_classifier.glove import glove_embeddings
from jobs.text_classifier.labels import class_names
from jobs.text_classifier.text import PAD_ID, UNK_ID, Vocab, document_tokens, tokenize

MODULE = "jobs.text_classifier"
# 300 articles -> 240 train / 60 val -> 8 steps of 32 per epoch; small model, short texts.
TINY = [
    "--synthetic",
    "300",
    "--seed",
    "3",
    "--log-every",
    "0",
    "--max-len",
    "32",
    "--hidden",
    "16",
    "--batch-size",
    "32",
    "--lr",
    "0.01",
]


def run(tmp: Path, *extra: str) -> int:
    return main(["--data", str(tmp / "data"), "--out", str(tmp / "out"), *TINY, *extra])


def final_state(out: Path) -> dict:
    path = latest_checkpoint(out)
    assert path is not None
    return load_checkpoint(path)


def one_error_line(err: str, needle: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert needle in err and "Traceback" not in err, err


def test_csv_quoting_and_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_text(
        "id,Title,text,label\n"
        '1,"Hello, world","first line\nsecond, line",REAL\n'
        "\n"
        '2,plain,"said ""quoted""",FAKE\n',
        encoding="utf-8",
    )
    table = read_table(path, ("title", "text", "label"))
    assert table.columns["title"] == ["Hello, world", "plain"]
    assert table.columns["text"] == ["first line\nsecond, line", 'said "quoted"']
    assert table.lines == [2, 5]  # a record's first line, past the embedded newline
    assert table.header == ["id", "title", "text", "label"] and not table.skipped
    assert class_names(table.columns["label"]) == ["FAKE", "REAL"]
    assert class_names(["10", "2", "2"]) == ["2", "10"]  # integer labels keep their order
    assert class_names(["real", "fake", "real"]) == ["fake", "real"]


def test_bad_rows_are_skipped_and_counted_once(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "title,text,label\n"
        "a,alpha beta,FAKE\n"  # line 2: kept
        "c,d\n"  # line 3: a field short
        "title,text,label\n"  # line 4: the header again, as `cat a.csv b.csv` leaves it
        ' , "...",REAL\n'  # line 5: no words at all
        "e,f, \n"  # line 6: no label
        'g,"two\nlines",REAL,extra\n'  # lines 7-8: a field too many
        "h,gamma,REAL\n",  # line 9: kept
        encoding="utf-8",
    )
    examples = read_examples(
        [path], label_column="label", text_columns=("title", "text"), max_len=2
    )
    assert examples.docs == [["a", "alpha"], ["h", "gamma"]]  # title first, cut at max_len
    assert examples.labels == ["FAKE", "REAL"]
    assert examples.notes == [
        f"note: {path}: skipped 5 of 7 rows (1 repeating the header, 1 with 2 fields where "
        "the header has 3, 1 with 4 fields where the header has 3, 1 with no label, 1 with "
        "no text; lines 3, 4, 5, 6, 7)"
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "the file is empty"),
        ("title,text,label\n", "no usable rows: no data rows below the header"),
        ("title,text,label\n,,FAKE\nc,d\n", "no usable rows: skipped 2 of 2 rows"),
        ("title,body,label\na,b,FAKE\n", "no column 'text' (columns: title, body, label)"),
    ],
)
def test_unusable_csv_names_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(needle)):
        read_examples([path], label_column="label", text_columns=("title", "text"), max_len=8)


def test_text_columns_join_in_order(tmp_path: Path) -> None:
    path = tmp_path / "news.csv"
    path.write_text("Body,Headline,class\nthe body,A HEAD,x\n,only head,y\n", encoding="utf-8")
    examples = read_examples(
        [path], label_column="class", text_columns=("body", "headline"), max_len=8
    )
    assert examples.docs == [["the", "body", "a", "head"], ["only", "head"]]
    assert examples.labels == ["x", "y"] and not examples.notes


def test_missing_column_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "news.csv").write_text("title,body,label\na,b,FAKE\n", encoding="utf-8")
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys.readouterr().err, "no column 'text' (columns: title, body, label)")


def test_tokenizer_and_vocab() -> None:
    assert tokenize("Don't PANIC: COVID-19, 3.5 times!") == [
        "don't",
        "panic",
        "covid-19",
        "3",
        "5",
        "times",
    ]
    assert document_tokens("Big News", "the end") == ["big", "news", "the", "end"]
    vocab = Vocab.build([["a", "b", "a"], ["a", "c", "b"], ["d"]], min_freq=2, max_size=10)
    assert vocab.itos == ("<pad>", "<unk>", "a", "b")
    assert vocab.encode(["a", "zzz", "b", "a"], max_len=3) == [2, UNK_ID, 3]
    assert vocab.encode([], max_len=3) == [UNK_ID]  # never a zero-length sequence
    capped = Vocab.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=1, max_size=3)
    assert capped.itos == ("<pad>", "<unk>", "a")


def test_glove_rows_dimension_and_coverage(tmp_path: Path) -> None:
    path = tmp_path / "glove.txt"
    path.write_text("the 0.5 -1 2\nnews 1e-3 0 3.25\nunused 9 9 9\n", encoding="utf-8")
    vocab = Vocab(["<pad>", "<unk>", "the", "news", "fake", "story"])
    emb = glove_embeddings(path, vocab, torch.Generator().manual_seed(0))
    assert emb.weight.shape == (6, 3)
    assert (emb.found, emb.words, emb.coverage) == (2, 4, 0.5)
    assert torch.equal(emb.weight[2], torch.tensor([0.5, -1.0, 2.0]))
    assert torch.equal(emb.weight[3], torch.tensor([1e-3, 0.0, 3.25]))
    assert torch.equal(emb.weight[PAD_ID], torch.zeros(3))
    assert emb.weight[4].abs().sum() > 0  # not in the file: random, not zero


@pytest.mark.parametrize("model", ["lstm", "bag"])
def test_each_model_learns(tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str) -> None:
    assert run(tmp_path, "--model", model, "--epochs", "4") == 0
    out = capsys.readouterr().out
    assert "GloVe covers " in out and "% of the vocabulary" in out
    assert out.count("epoch ") >= 4
    rows = read_metrics(tmp_path / "out")
    train = [r["loss"] for r in rows if r["split"] == "train"]
    val = [r["accuracy"] for r in rows if r["split"] == "val"]
    assert train[-1] < train[0]
    assert val[-1] > 0.7  # chance is ~0.5
    assert (tmp_path / "out" / "loss.png").is_file()


def test_resume_after_max_steps_equals_unbroken(tmp_path: Path) -> None:
    unbroken, broken = tmp_path / "a", tmp_path / "b"
    assert run(unbroken, "--epochs", "2") == 0
    assert run(broken, "--epochs", "2", "--max-steps", "3") == 0  # mid epoch 1
    assert final_state(broken / "out")["step"] == 3
    assert run(broken, "--epochs", "2", "--resume", "--max-steps", "11") == 0  # mid epoch 2
    assert run(broken, "--epochs", "2", "--resume") == 0
    a, b = final_state(unbroken / "out"), final_state(broken / "out")
    assert a["step"] == b["step"] == 16
    for name, tensor in a["models"]["model"].items():
        assert torch.equal(tensor, b["models"]["model"][name]), name
    assert a["extra"]["labels"] == ["FAKE", "REAL"] and a["extra"]["vocab"] == b["extra"]["vocab"]


def test_predict_prints_label_and_confidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--model", "bag", "--epochs", "2") == 0
    capsys.readouterr()
    ckpt = str(latest_checkpoint(tmp_path / "out"))
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                ckpt,
                "--title",
                "Shocking secret",
                "--text",
                "The hoax was exposed, insiders say.",
            ]
        )
        == 0
    )
    label, confidence = capsys.readouterr().out.strip().split("\t")
    assert label in ("FAKE", "REAL") and 0.5 <= float(confidence) <= 1.0
    csv_file = tmp_path / "new.csv"
    csv_file.write_text('text\n"officials said, in a statement"\nbanned truth\n')
    assert main(["predict", "--checkpoint", str(tmp_path / "out"), "--csv", str(csv_file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in ("FAKE", "REAL") for line in lines)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{tmp}", "--out", "{tmp}/o", "--model", "gru"], "--model"),
        (["--data", "{tmp}/missing", "--out", "{tmp}/o"], "--data"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--glove", "{tmp}/no.txt"], "--glove"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--max-len", "0"], "--max-len"),
        (["predict", "--checkpoint", "{tmp}/none.pt", "--text", "x"], "--checkpoint"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_module, tmp_path: Path, argv: list[str], needle: str
) -> None:
    result = run_module(MODULE, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    one_error_line(result.stderr, needle)


def test_sigterm_saves_and_exits_0(tmp_path: Path, spawn_module) -> None:
    out = tmp_path / "out"
    proc = spawn_module(
        MODULE, "--data", str(tmp_path / "data"), "--out", str(out), *TINY, "--epochs", "500"
    )
    line = proc.stdout.readline()
    while line and not line.startswith("text_classifier: "):  # the start-up line
        line = proc.stdout.readline()
    assert line.startswith("text_classifier: "), line
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in rest and "Traceback" not in err
    state = load_checkpoint(latest_checkpoint(out))
    assert state["step"] >= 1 and state["epoch"] < 500
    assert all(torch.isfinite(t).all() for t in state["models"]["model"].values())
