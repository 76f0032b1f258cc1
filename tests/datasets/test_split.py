"""Splitting a stored canonical file gives the same files as normalizing the source with the split."""

import json

import pytest

from tunewire.datasets.api import normalize_file, split_canonical

pytestmark = pytest.mark.timeout(120)


def _source(path, n: int) -> None:
    lines = []
    for i in range(n):
        if i % 97 == 5:
            lines.append('{"instruction": 5, "output": "x"}')  # an invalid record: a gap
        elif i % 31 == 0:
            lines.append(
                json.dumps(
                    {
                        "conversations": [
                            {"from": "human", "value": f'Look up {i}, "line":{i}}}'},
                            {"from": "gpt", "value": f"Found {i}.\n"},
                        ],
                        "tools": [{"name": "lookup", "limit": 1e400 if i % 2 else 1 << 70}],
                    }
                ).replace("Infinity", "1e400")
            )
        else:
            lines.append(
                json.dumps(
                    {
                        "conversations": [
                            {"from": "human", "value": f"Question {i}? Grüße"},
                            {"from": "gpt", "value": f"Answer {i}."},
                        ]
                    }
                )
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# 9000 records: the split is decided with numpy, a window of lines at a time.
@pytest.mark.parametrize(
    ("records", "fraction", "seed"), [(40, 0.25, 7), (40, 0.0, 3), (9000, 0.05, 0)]
)
def test_a_split_of_the_canonical_file_equals_normalizing_with_that_split(
    tmp_path, records, fraction, seed
):
    source = tmp_path / "chats.jsonl"
    _source(source, records)
    canonical = normalize_file(source, tmp_path / "canonical").train_path
    direct = normalize_file(source, tmp_path / "direct", fraction, seed)
    split = split_canonical(canonical, tmp_path / "split", fraction, seed)
    assert split.train_path.read_bytes() == direct.train_path.read_bytes()
    assert (split.train_records, split.validation_records) == (
        direct.statistics.train_records,
        direct.statistics.validation_records,
    )
    if fraction:
        assert split.validation_path.read_bytes() == direct.validation_path.read_bytes()
        assert split.validation_records > 0
    else:
        assert split.validation_path is None and direct.validation_path is None


def test_a_file_that_is_not_canonical_is_refused_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages":[],"line":1}\n{"instruction": "x"}\n')
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="byte 25 is not a canonical record"):
        split_canonical(bad, out, 0.5)
    assert list(out.iterdir()) == []
    with pytest.raises(ValueError, match="validation_fraction"):
        split_canonical(bad, out, 1.0)


def test_a_workers_part_is_moved_to_the_output_step_by_step(tmp_path, monkeypatch):
    """Appending a part never holds a whole second copy: it is cut shorter as it is copied."""
    from tunewire.datasets import output

    monkeypatch.setattr(output, "_APPEND_STEP", 7)
    target = output.AtomicFile(tmp_path / "train.jsonl")
    with target.open() as f:
        f.write(b"first part\n")
    part = tmp_path / "part"
    part.write_bytes(bytes(range(256)) * 3)
    sizes = []
    real_truncate = output.os.ftruncate

    def truncate(fd, length):
        if length < 768:  # the part's (the output is first extended to 779)
            sizes.append(length)
        real_truncate(fd, length)

    monkeypatch.setattr(output.os, "ftruncate", truncate)
    target.append(part)
    target.commit()
    assert (tmp_path / "train.jsonl").read_bytes() == b"first part\n" + bytes(range(256)) * 3
    assert not part.exists()
    assert sizes == [*range(768 - 7, 0, -7), 0]
