"""The UCSD ``.m`` ground-truth parser on the awkward inputs real and hand-edited files contain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_ad.data.mfile import (
    format_ranges,
    labels_to_ranges,
    parse_gt_entries,
    parse_gt_file,
    parse_gt_text,
    ranges_to_labels,
)
from edge_ad.errors import UserError

E = "TestVideoFile{end+1}.gt_frame = "

GOOD = [
    ("single", f"{E}[61:180];", [[(61, 180)]]),
    ("no-semicolon", f"{E}[61:180]", [[(61, 180)]]),
    ("comma-list", f"{E}[1:10, 20, 30:40];", [[(1, 10), (20, 20), (30, 40)]]),
    ("space-list", f"{E}[1:10 20 30:40];", [[(1, 10), (20, 20), (30, 40)]]),
    ("spaces-in-range", f"{E}[ 5 : 9 ,12 ];", [[(5, 9), (12, 12)]]),
    ("bare-numbers", f"{E}[3 4 5];", [[(3, 3), (4, 4), (5, 5)]]),
    ("empty", f"{E}[];", [[]]),
    ("step", f"{E}[1:3:10];", [[(1, 1), (4, 4), (7, 7), (10, 10)]]),
    ("comment-after", f"{E}[1:2]; % the cart [oops", [[(1, 2)]]),
    ("tabs-and-spaces", "\tTestVideoFile { end + 1 } . gt_frame=[7:8] ;", [[(7, 8)]]),
    (
        "ucsd-header",
        f"% UCSD Ped1 ground truth\n\nTestVideoFile = {{}};\nfoo = 3;\n{E}[60:152];\n{E}[50:175];\n",
        [[(60, 152)], [(50, 175)]],
    ),
    (
        "explicit-index",
        "TestVideoFile{1}.gt_frame = [1:5];\nTestVideoFile{3}.gt_frame = [2:3];",
        [[(1, 5)], None, [(2, 3)]],
    ),
    ("explicit-then-end", f"TestVideoFile{{2}}.gt_frame = [4];\n{E}[9:10];", [None, [(4, 4)], [(9, 10)]]),
    ("commented-out-line", f"% {E}[1:2];\n{E}[3:4];", [[(3, 4)]]),
    ("other-fields-ignored", "TestVideoFile{end}.name = 'Test001';\nx = [1:2", []),
    ("crlf", f"{E}[1:2];\r\n{E}[3:4];\r\n", [[(1, 2)], [(3, 4)]]),
]

BAD = [
    ("unbalanced-open", f"{E}[61:180;", "line 1: unbalanced"),
    ("unbalanced-close", f"{E}61:180];", "line 1: unbalanced"),
    ("nested", f"{E}[[1:2]];", "line 1: unbalanced"),
    ("open-range", f"% c\n{E}[5:];", "line 2: cannot read '5:'"),
    ("backwards", f"\n\n{E}[9:5];", "line 3: range '9:5' runs backwards"),
    ("letters", f"{E}[1:a];", "line 1: cannot read '1:a'"),
    ("zero", f"{E}[0:5];", "line 1: frame numbers start at 1"),
    ("negative", f"{E}[-1:5];", "line 1: cannot read '-1:5'"),
    ("no-list", f"{E}61;", "line 1: unbalanced or missing brackets"),
    ("missing-equals", "TestVideoFile{end+1}.gt_frame [1:2];", "line 1: cannot read"),
    ("duplicate-index", "TestVideoFile{2}.gt_frame = [1];\nTestVideoFile{2}.gt_frame = [2];", "line 2: .* twice"),
    ("zero-step", f"{E}[1:0:5];", "line 1: range '1:0:5' needs a positive step"),
    ("index-zero", "TestVideoFile{0}.gt_frame = [1];", "line 1: clip indices start at 1"),
]


@pytest.mark.parametrize(("text", "expected"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_parses(text: str, expected: list) -> None:
    assert parse_gt_text(text) == expected


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_rejects_with_line_number(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        parse_gt_text(text, "UCSDped1.m")
    assert str(err.value).startswith("UCSDped1.m line ") and "\n" not in str(err.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "UCSDped2.m"
    path.write_text(f"{E}[1:2];\n{E}[3:x];\n")
    with pytest.raises(UserError, match=r"UCSDped2\.m line 2"):
        parse_gt_file(path)
    with pytest.raises(UserError, match="cannot read ground-truth file"):
        parse_gt_file(tmp_path / "missing.m")


def test_labels_roundtrip() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)
    ranges = labels_to_ranges(labels)
    assert ranges == [(2, 3), (5, 5), (8, 8)]
    assert format_ranges(ranges) == "[2:3, 5, 8]"
    assert parse_gt_text(f"{E}{format_ranges(ranges)};") == [ranges]
    np.testing.assert_array_equal(ranges_to_labels(ranges, 8), labels)
    assert labels_to_ranges(np.zeros(4, bool)) == [] and format_ranges([]) == "[]"
    with pytest.raises(UserError, match="frames 5:9 exceed the clip's 8 frames"):
        ranges_to_labels([(5, 9)], 8)


def test_kinds_come_from_the_lines_trailing_comment() -> None:
    """What ``edge-ad synth`` writes, a hand-written label, none at all (UCSD's own files), and a comment on a
    line of its own, which names no clip's kinds."""
    text = (
        "% Test001: cart\n"
        f"{E}[1:5];  % cart, vehicle\n"
        f"{E}[];  % no anomaly\n"
        f"{E}[2:3];\n"
        f"{E}[4:9]; %  Cyclist near the gate \n"
    )
    entries = parse_gt_entries(text)
    assert [e.kinds for e in entries] == [("cart", "vehicle"), (), (), ("Cyclist near the gate",)]
    assert [e.ranges for e in entries] == parse_gt_text(text) == [[(1, 5)], [], [(2, 3)], [(4, 9)]]
