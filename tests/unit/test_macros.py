import math

import pytest

from adapterscope import decorrelation, dose, macros, regimes


def test_ledger_view_keeps_the_ledger_keys_only_and_checks_required_ones():
    r = {"value": 0.4, "n": 12, "p_value": 0.01, "p_method": "exact", "ci_low": 0.1, "ci_high": 0.7,
         "reason": "", "internal": [1, 2, 3], "n_runs": 5}
    assert macros.ledger_view(r) == {k: r[k] for k in macros.LEDGER_KEYS}
    assert macros.ledger_view(r, extra=("n_runs",))["n_runs"] == 5
    undefined = {"value": math.nan, "n": 2, "reason": "fewer than 3 units"}
    assert macros.ledger_view(undefined) == undefined
    with pytest.raises(KeyError, match="p_value"):
        macros.ledger_view(undefined, require=("value", "p_value"))


def test_every_producer_uses_the_shared_view():
    r = {"value": 0.4, "n": 12, "p_value": 0.01, "p_method": "exact", "ci_low": 0.1, "ci_high": 0.7,
         "unit": "model x corpus", "junk": 1}
    assert dose.finding(r) == macros.ledger_view(r)
    assert decorrelation.finding(r) == {**macros.ledger_view(r), "unit": "model x corpus"}
    assert regimes.finding(r) == macros.ledger_view(r)
    with pytest.raises(KeyError):
        regimes.finding({"value": 0.4})
