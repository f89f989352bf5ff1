"""Every row of the validation table (tests/validation_cases.py, printed in docs/errors.md) raises its
documented sdeflow exception with a message naming the argument; the docs table lists every row."""

import pathlib
import re
import warnings

import pytest

import sdeflow as sf
from validation_cases import CASES, case_id, row_prefix

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "errors.md"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_raises_the_documented_error(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.exc, match=case.match) as info:
            case.call()
    assert type(info.value).__module__.startswith("sdeflow.")  # sdeflow's own classes, not a stray torch error
    if case.exc is not sf.NonFiniteError:  # the message names (one of) the argument(s)
        names = [re.split(r"[ (=]", a.strip())[0] for a in case.argument.split(",")]
        assert any(n.lower() in str(info.value).lower() for n in names), (names, str(info.value))


def test_sdeflow_errors_are_ordinary_python_errors():
    assert issubclass(sf.SdeflowValueError, ValueError) and issubclass(sf.SdeflowTypeError, TypeError)
    assert issubclass(sf.NonFiniteError, FloatingPointError) and issubclass(sf.NonFiniteError, ArithmeticError)


def test_docs_table_lists_every_case():
    text = DOC.read_text()
    missing = [row_prefix(c) for c in CASES if row_prefix(c) not in text]
    assert not missing, "docs/errors.md is stale; regenerate with python tests/validation_cases.py:\n" + "\n".join(missing)
