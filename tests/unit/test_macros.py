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
    """The one view at each producer's options gives exactly what its deleted ``finding`` wrapper gave:
    11_dose the plain view, 10_decorrelation the view plus the clamp's run counts and unit, 05b_regime_probing
    the plain view with every key of ``regimes.FINDING_KEYS`` required."""
    r = {"value": 0.4, "n": 12, "p_value": 0.01, "p_method": "exact", "ci_low": 0.1, "ci_high": 0.7,
         "unit": "model x corpus", "junk": 1}
    plain = {k: r[k] for k in ("value", "n", "p_value", "p_method", "ci_low", "ci_high")}
    assert macros.ledger_view(r) == plain                                            # 11_dose
    assert decorrelation.FINDING_EXTRA == ("n_runs", "n_top_r_runs", "unit")
    assert macros.ledger_view(r, extra=decorrelation.FINDING_EXTRA) == {**plain, "unit": "model x corpus"}
    clamp = {**r, "n_runs": 6, "n_top_r_runs": 2, "reason": ""}
    assert macros.ledger_view(clamp, extra=decorrelation.FINDING_EXTRA) == {
        **plain, "reason": "", "n_runs": 6, "n_top_r_runs": 2, "unit": "model x corpus"}  # 10_decorrelation
    assert macros.ledger_view(r, require=regimes.FINDING_KEYS) == plain                  # 05b_regime_probing
    with pytest.raises(KeyError):
        macros.ledger_view({"value": 0.4}, require=regimes.FINDING_KEYS)
    for mod in (decorrelation, dose, regimes):
        assert not hasattr(mod, "finding"), f"{mod.__name__}.finding is back: use macros.ledger_view"
