"""text_classifier: CSV parsing, tokenizer/vocabulary, GloVe loading, and end-to-end runs
of ``python -m jobs.text_classifier`` on tiny generated data."""

from __future__ import annotations

import csv
import io
import random
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
    assert "== text_classifier summary ==" in out and "verdict: no sign" in out


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


# --- Real-shaped data: Kaggle's "Fake and real news" (Fake.csv + True.csv, no label column)
# and the "fake-news" competition (train.csv with id,title,author,text,label), written as
# pandas writes them: minimal quoting, "\n" line ends, multi-line texts with commas and quotes.

KAGGLE_HEADER = ["title", "text", "subject", "date"]
FAKE_WORDS = ["shocking", "hoax", "exposed", "secret", "elite", "bombshell", "truth"]
TRUE_WORDS = ["reuters", "officials", "said", "statement", "ministry", "percent", "budget"]
FILLER = ["the", "of", "and", "to", "a", "in", "that", "is", "was", "for", "on", "with"]
# Kaggle's longest articles pass the csv module's default field limit of 131072 characters.
OVERLONG = 140_000
# 40 fake rows (one with no words, one a field short: 38 usable), 30 true rows (all usable).
N_FAKE, N_TRUE = 40, 30
# Small and quick: 68 usable rows -> 14 val / 54 train, 4 steps of 16 per epoch.
KAGGLE_TINY = ["--seed", "1", "--log-every", "0", "--max-len", "24", "--min-freq", "1"]
KAGGLE_TINY += ["--model", "bag", "--batch-size", "16", "--lr", "0.05", "--epochs", "3"]


def article(rng: random.Random, words: list[str], paragraphs: int) -> str:
    """Paragraphs on separate lines, with commas and double quotes, as in the Kaggle texts."""
    parts = []
    for _ in range(paragraphs):
        sentence = rng.choices(words, k=6) + rng.choices(FILLER, k=6)
        rng.shuffle(sentence)
        parts.append(f'{" ".join(sentence[:6])}, "{" ".join(sentence[6:])}," they said.')
    return "\n".join(parts)


def headline(prefix: str, rng: random.Random, words: list[str]) -> str:
    return f"{prefix} {' '.join(rng.choices(words, k=3))}"


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = False) -> list[int]:
    """Write a CSV as pandas' to_csv does; returns the line each row starts on."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    starts = []
    for row in rows:
        starts.append(buffer.getvalue().count("\n") + 1)
        writer.writerow(row)
    path.write_bytes(buffer.getvalue().encode("utf-8-sig" if bom else "utf-8"))
    return starts


def write_fake_and_real(folder: Path) -> list[int]:
    """Fake.csv and True.csv (with a byte-order mark) as Kaggle ships them, plus Kaggle's
    quirks; returns the lines of Fake.csv's two unusable rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    fake = [
        [
            headline("BREAKING:", rng, FAKE_WORDS),
            article(rng, FAKE_WORDS, 3),
            "News",
            "Dec 31, 2017",
        ]
        for _ in range(N_FAKE)
    ]
    true = [
        [
            headline("U.S.", rng, TRUE_WORDS),
            article(rng, TRUE_WORDS, 3),
            "politicsNews",
            "Dec 29, 2017 ",
        ]
        for _ in range(N_TRUE)
    ]
    fake[3][1] = " "  # an empty text: the title still makes a document
    fake[7][:2] = ["", " "]  # no words at all: skipped
    fake[11] = fake[11][:3]  # the date missing: skipped
    filler = " ".join(rng.choices(TRUE_WORDS + FILLER, k=OVERLONG // 5))
    true[2][1] = ("WASHINGTON (Reuters) - " + filler)[:OVERLONG]
    assert len(true[2][1]) > 131072
    lines = write_csv(folder / "Fake.csv", KAGGLE_HEADER, fake)
    write_csv(folder / "True.csv", KAGGLE_HEADER, true, bom=True)
    return [lines[7], lines[11]]


def class_totals(out: str) -> dict[str, int]:
    """Rows per class (train + val) from the start-up line's "fake (30 train, 8 val)"."""
    found = re.findall(r"(\w+) \((\d+) train, (\d+) val\)", out)
    return {name: int(train) + int(val) for name, train, val in found}


def test_one_csv_per_class_fake_and_true(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    bad_lines = write_fake_and_real(data)
    # Kaggle's competition test file has no labels; here it must be named, not read.
    (data / "test.csv").write_text("id,title,text\n1,a,b\n", encoding="utf-8")
    assert main(["--data", str(data), "--out", str(out), *KAGGLE_TINY]) == 0
    log = capsys.readouterr().out
    assert "one CSV per class (Fake.csv -> fake, True.csv -> true)" in log
    assert class_totals(log) == {"fake": N_FAKE - 2, "true": N_TRUE}
    assert f"{N_FAKE + N_TRUE - 2 - 14} train / 14 val" in log
    lines = ", ".join(map(str, bad_lines))
    assert (
        f"note: {data / 'Fake.csv'}: skipped 2 of {N_FAKE} rows (1 with 3 fields where the "
        f"header has 4, 1 with no text; lines {lines})"
    ) in log
    assert "True.csv: skipped" not in log  # the BOM and the overlong field read fine
    assert f"note: {data}: not used: test.csv (every training CSV is a class" in log
    state = final_state(out)
    assert state["extra"]["labels"] == ["fake", "true"]
    assert state["extra"]["text_columns"] == ["title", "text"]
    val = [r["accuracy"] for r in read_metrics(out) if r["split"] == "val"]
    assert val[-1] >= 0.8  # the class words differ completely: learnt from both files

    title, text = "U.S. officials said", "The ministry's statement, in full"
    assert main(["predict", "--checkpoint", str(out), "--title", title, "--text", text]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "true"
    new = tmp_path / "new.csv"
    write_csv(new, ["text"], [["officials said, the ministry"], ["shocking\nhoax exposed"]])
    assert main(["predict", "--checkpoint", str(out), "--csv", str(new)]) == 0
    printed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["true", "fake"]  # no title column: the text alone is read
    # A row predict cannot read would shift every later output line: refused, not skipped.
    assert main(["predict", "--checkpoint", str(out), "--csv", str(data / "Fake.csv")]) == 2
    err = capsys.readouterr().err
    assert f"skipped 1 of {N_FAKE} rows (1 with 3 fields where the header has 4" in err
    assert "each output line must match an input row" in err


def test_label_column_with_strings_and_text_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    rng = random.Random(2)
    rows = []
    for i in range(60):
        fake = i % 3 == 0
        words = FAKE_WORDS if fake else TRUE_WORDS
        # The label is in a column named "Class"; the title column holds only noise.
        rows.append([str(i), "same title", article(rng, words, 2), "FAKE" if fake else "REAL"])
    write_csv(data / "news.csv", ["id", "title", "body", "Class"], rows)
    argv = ["--data", str(data), "--out", str(out), *KAGGLE_TINY]
    argv += ["--label-column", "class", "--text-columns", "Body"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert class_totals(log) == {"FAKE": 20, "REAL": 40}
    state = final_state(out)
    assert state["extra"]["labels"] == ["FAKE", "REAL"]
    assert state["extra"]["text_columns"] == ["body"]
    assert state["args"]["label_column"] == "class" and state["args"]["text_columns"] == "body"
    # "same title" never reached the vocabulary: only --text-columns is read.
    assert "same" not in state["extra"]["vocab"] and "ministry" in state["extra"]["vocab"]
    new = tmp_path / "new.csv"
    write_csv(new, ["body"], [["the ministry said, officials"], ["shocking hoax exposed"]])
    assert main(["predict", "--checkpoint", str(out), "--csv", str(new)]) == 0
    printed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["REAL", "FAKE"]


def test_fake_news_competition_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    rng = random.Random(3)
    rows = []
    for i in range(50):
        unreliable = i % 2
        text = article(rng, FAKE_WORDS if unreliable else TRUE_WORDS, 2)
        rows.append([str(i), f"title {i}", "an author", text, str(unreliable)])
    rows[4][1] = ""  # Kaggle's train.csv has rows with no title ...
    rows[9][3] = ""  # ... and rows with no text: both still have words
    write_csv(data / "train.csv", ["id", "title", "author", "text", "label"], rows)
    write_csv(data / "test.csv", ["id", "title", "author", "text"], [["99", "t", "a", "x"]])
    write_csv(data / "submit.csv", ["id", "label"], [["99", "0"]])
    assert main(["--data", str(data), "--out", str(out), *KAGGLE_TINY]) == 0
    log = capsys.readouterr().out
    assert class_totals(log) == {"0": 25, "1": 25}
    assert f"note: {data / 'test.csv'} has no 'label' column; validating on a split" in log
    assert f"note: {data}: not used: submit.csv (pass --train-file NAME" in log
    assert final_state(out)["extra"]["labels"] == ["0", "1"]


def test_several_labelled_csvs_are_concatenated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = random.Random(4)
    for name, label, n in (("part-a.csv", "fake", 20), ("part-b.csv", "real", 15)):
        words = FAKE_WORDS if label == "fake" else TRUE_WORDS
        rows = [[f"t{i}", article(rng, words, 1), label] for i in range(n)]
        write_csv(data / name, ["title", "text", "label"], rows)
    (data / "val.csv").write_text(
        "title,text,label\nx,shocking hoax,fake\ny,officials said,real\nz,other,unknown\n",
        encoding="utf-8",
    )
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), *KAGGLE_TINY, "--epochs", "1"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert f"{data}: part-a.csv + part-b.csv, column 'label' + val.csv for validation" in log
    assert "35 train / 2 val" in log
    assert f"note: {data / 'val.csv'}: skipped 1 of 3 rows (1 with a label the training" in log


@pytest.mark.parametrize(
    ("files", "flags", "needle"),
    [
        # Only Fake.csv: nothing says what the other class is.
        (
            ["Fake.csv"],
            [],
            "Fake.csv: no column 'label' (columns: title, text, subject, date); pass "
            "--label-column NAME",
        ),
        (
            ["Fake.csv", "True.csv"],
            ["--label-column", "is_fake"],
            "Fake.csv: no column 'is_fake' (columns: title, text, subject, date); pass "
            "--label-column NAME",
        ),
        (
            ["Fake.csv", "True.csv"],
            ["--text-columns", "title,body"],
            "Fake.csv: no column 'body' (columns: title, text, subject, date); pass "
            "--text-columns NAME[,NAME...]",
        ),
        (
            ["Fake.csv", "labelled.csv"],
            [],
            "labelled.csv with a 'label' column, Fake.csv without: for one CSV per class",
        ),
        (["Fake.csv", "Empty.csv"], [], "Empty.csv: no usable rows for class 'empty'"),
        (["Fake.csv", "fake.csv"], [], "every usable row is of class 'fake'"),
        (["labelled.csv"], ["--text-columns", "title,label"], "includes the label column"),
        (["Fake.csv", "True.csv"], ["--text-columns", "title,,text"], "--text-columns"),
    ],
)
def test_layout_errors_exit_2_with_one_line(
    run_module, tmp_path: Path, files: list[str], flags: list[str], needle: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    contents = {
        "Fake.csv": 'title,text,subject,date\nA,"b, c",News,"May 1, 2017"\n',
        "True.csv": 'title,text,subject,date\nD,"e, f",News,"May 1, 2017"\n',
        "fake.csv": 'title,text,subject,date\nG,"h, i",News,"May 1, 2017"\n',
        "Empty.csv": 'title,text,subject,date\n"","",News,"May 1, 2017"\n',
        "labelled.csv": "title,text,label\nj,k,1\nl,m,0\n",
    }
    for name in files:
        (data / name).write_text(contents[name], encoding="utf-8")
    result = run_module(MODULE, "--data", str(data), "--out", str(tmp_path / "o"), *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    one_error_line(result.stderr, needle)
