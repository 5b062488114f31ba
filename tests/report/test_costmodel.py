"""The cost model: the busiest core sets the step, never below the chip's minimum; every output is labelled."""

from ssmc.report.costmodel import CONSTANTS, estimate


def test_step_is_set_by_the_busiest_core_and_floored_at_the_minimum():
    t_syn, t_neu = CONSTANTS["T_SYNOP_NS"][0], CONSTANTS["T_NEURON_NS"][0]
    busy = estimate([10_000, 10], [100, 100], messages=50, inter_core=20, hop_weighted=30, depth=3, chips=1)
    assert busy["step_ns"] == round(10_000 * t_syn + 100 * t_neu, 1)
    assert busy["latency_ns"] == round(busy["step_ns"] * 4, 1)
    idle = estimate([1], [1], messages=1, inter_core=0, hop_weighted=0, depth=0, chips=1)
    assert idle["step_ns"] == CONSTANTS["T_STEP_MIN_NS"][0]


def test_energy_adds_up_from_cited_constants_and_says_it_is_an_estimate():
    e = estimate([100], [10], messages=5, inter_core=2, hop_weighted=3, depth=0, chips=2)
    c = {k: v for k, (v, _) in CONSTANTS.items()}
    dynamic = 100 * c["E_SYNOP_PJ"] + 10 * c["E_NEURON_PJ"] + 3 * c["E_HOP_PJ"] + 2 * c["E_INTER_CORE_PJ"]
    assert abs(e["energy_dynamic_nj"] - dynamic / 1000) < 1e-3
    assert abs(e["energy_static_nj"] - c["P_STATIC_W"] * 2 * e["step_ns"] * 1e-9 * 1e9) < 1e-3
    assert "ESTIMATE" in e["label"]
    assert all("facts #" in v["source"] for v in e["constants"].values())
