"""Names are data: encodings are one-to-one, tables keep names as written."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from desweep.io import read_csv, write_csv
from desweep.names import MAX_PLAIN, encode_name, join_names, parse_pairs, quote_name, split_list, split_names

AWKWARD = ["01", "001", "1", "1.0", "NA", "N/A", "None", "nan", "null", "", "CD4+", "CD4-", "CD4", "a;b", "a:b", 'say "hi"',
           "a,b", "a/b", "α", "β", "x" * 200, "x" * 199 + "y", " padded ", "only_batch0", "only-batch0", "a_vs_b", "a_vs",
           "vs_b", "T cells/NK", "-lead", "trail.", "back\\slash", "semi;;colon"]


def test_encode_name_keeps_plain_names_and_is_one_to_one():
    assert encode_name("only_batch0") == "only_batch0" and encode_name("01") == "01" and encode_name("B.cell-2") == "B.cell-2"
    encoded = {name: encode_name(name) for name in AWKWARD}
    assert len(set(encoded.values())) == len(AWKWARD), "two names share an encoding"
    for code in encoded.values():
        assert len(code) <= MAX_PLAIN
        assert all(c.isascii() and (c.isalnum() or c in "._-+") for c in code), code
        assert "__" not in code and "_vs_" not in f"_{code}_", code


def test_comparison_ids_do_not_collide_across_the_vs_separator():
    from desweep.composition import comparison_id

    pairs = [(a, b) for a in AWKWARD for b in AWKWARD if a != b]
    ids = {comparison_id(a, b) for a, b in pairs}
    assert len(ids) == len(pairs)


@pytest.mark.parametrize("names", [["b1", "b2"], ["a;b", "c\\d", ";", "\\"], ["01"], [], ["x" * 200, "β;γ"]])
def test_join_and_split_names_round_trip(names):
    assert split_names(join_names(names)) == names


def test_split_names_of_missing_and_plain_cells():
    assert split_names("") == [] and split_names(float("nan")) == [] and split_names(None) == []
    assert split_names("b1;b2") == ["b1", "b2"]


def test_quoted_lists_and_pairs_carry_any_name():
    rng = random.Random(0)
    for _ in range(50):
        names = rng.sample([n for n in AWKWARD if n], 4)
        assert split_list(",".join('"' + n.replace('"', '""') + '"' for n in names)) == names
        text = ";".join(f"{quote_name(a)}:{quote_name(b)}" for a, b in zip(names[::2], names[1::2], strict=True))
        assert parse_pairs(text) == [names[0:2], names[2:4]]


def test_read_csv_keeps_names_as_written(tmp_path: Path):
    genes = ["01", "1", "1.0", "NA", "None", "nan", "", "TRUE", "1e5"]
    table = pd.DataFrame({"gene": genes, "cluster": genes[::-1], "mean": range(len(genes))})
    write_csv(table, tmp_path / "t.csv")
    back = read_csv(tmp_path / "t.csv")
    assert list(back["gene"]) == genes and list(back["cluster"]) == genes[::-1]
    assert back["mean"].dtype.kind == "i"


def test_read_csv_reads_tsv_by_suffix(tmp_path: Path):
    (tmp_path / "s.tsv").write_text("sample\tbatch\tpath\nA,1\t01\ta.h5ad\n")
    back = read_csv(tmp_path / "s.tsv")
    assert back.iloc[0].tolist() == ["A,1", "01", "a.h5ad"]
