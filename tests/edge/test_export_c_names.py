"""Names refused for C exports say why.

``check_c_name`` refuses Python keywords as well as C's reserved words, but told a name such
as ``lambda`` or ``def`` that it "must be a C identifier: a letter or '_' then letters,
digits or '_'", which it is: the user was left looking for a bad character."""

from __future__ import annotations

import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge import export
from edgewise.errors import ExportError


@pytest.mark.parametrize("name", ["lambda", "def", "None"])
def test_python_keyword_name_is_refused_as_a_reserved_word(name: str) -> None:
    """Check a Python keyword is refused as a reserved word with a name to use instead, not
    as a name that is no C identifier."""
    with pytest.raises(ExportError, match=rf"C name '{name}' is a reserved word \(Python's\)\. "
                                          rf"Use another, e.g\. '{name}_model'\.") as got:
        export(EWZScore(), format="c", name=name)
    assert "must be a C identifier" not in str(got.value)


def test_c_reserved_word_and_bad_identifier_keep_their_messages() -> None:
    """Check a C reserved word and a name with a bad character keep their own messages."""
    with pytest.raises(ExportError, match=r"'while' is a reserved word \(C's\)"):
        export(EWZScore(), format="c", name="while")
    with pytest.raises(ExportError, match=r"'a-b' must be a C identifier"):
        export(EWZScore(), format="c", name="a-b")
