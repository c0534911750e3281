"""The automatic choice between dense and the sparse kernels: its decision rule (with injected timings, so the
test does not depend on the machine's speed), its cache, and that both paths compute the same thing."""

import json

import pytest
import torch
from torch import nn

from sparsa import SparseLinear
from sparsa.formats import pack
from sparsa.kernels import Prepared, autotune, kernels_for

from helpers import sparse_weight


@pytest.fixture(autouse=True)
def _fresh_cache():
    autotune.clear_cache()
    yield
    autotune.clear_cache()


def _weight(spec="4x1", sparsity=0.9):
    p = pack(sparse_weight(64, 96, spec, sparsity, torch.Generator().manual_seed(0)), spec)
    return Prepared(p), p.to_dense()


def test_dense_wins_unless_a_kernel_beats_it_by_the_margin(monkeypatch):
    prep, dense = _weight()
    fastest = kernels_for(prep.packed)[0].name
    for kernel_ms, expected in [(0.97, "dense"), (0.90, fastest), (1.5, "dense")]:
        monkeypatch.setattr(autotune, "_time_all",
                            lambda fns, reps, threads, t=kernel_ms: {n: (1.0 if n == "dense" else t + (n != fastest))
                                                                      for n in fns})
        assert autotune.measure(prep, dense, 128, 2).kernel == expected


def test_a_burst_of_load_does_not_decide_the_choice(monkeypatch):
    # a fake clock: dense costs 1.0, each kernel 0.5, and calls 9-15 of the measurement (a burst of load from
    # elsewhere) 10.0 more. Timed one candidate after the other, the burst would fall on every sample of the
    # first kernel and hand the choice to dense; in interleaved rounds it costs each candidate two samples.
    prep, dense = _weight()
    clock = {"t": 0.0, "calls": 0}

    def cost(ms):
        def call():
            clock["t"] += ms + (10.0 if 9 <= clock["calls"] <= 15 else 0.0)
            clock["calls"] += 1
        return call

    fns = {"dense": cost(1.0), **{k.name: cost(0.5) for k in kernels_for(prep.packed, n=128)}}
    monkeypatch.setattr(autotune, "_clock", lambda: clock["t"] / 1e3)
    times = autotune._time_all(fns, 7, 2)
    assert times["dense"] == pytest.approx(1.0) and all(t == pytest.approx(0.5) for n, t in times.items()
                                                         if n != "dense")


def test_candidates_far_behind_stop_after_the_first_rounds(monkeypatch):
    prep, dense = _weight()
    clock = {"t": 0.0}
    calls: dict[str, int] = {}

    def cost(name, ms):
        def call():
            clock["t"] += ms
            calls[name] = calls.get(name, 0) + 1
        return call

    fns = {"dense": cost("dense", 8.0), "fast": cost("fast", 1.0), "close": cost("close", 2.9),
           "slow": cost("slow", 3.1)}
    monkeypatch.setattr(autotune, "_clock", lambda: clock["t"] / 1e3)
    times = autotune._time_all(fns, 7, 2)
    assert calls == {"dense": 14, "fast": 14, "close": 14, "slow": 2 * autotune.DROP_AFTER}
    assert times == pytest.approx({"dense": 8.0, "fast": 1.0, "close": 2.9, "slow": 3.1})


def test_choices_are_cached_in_memory_and_on_disk(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSA_CACHE_DIR", str(tmp_path))
    autotune.clear_cache()
    prep, dense = _weight()
    calls = []
    real = autotune.measure

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(autotune, "measure", counting)
    c1 = autotune.choose(prep, dense, 100, threads=1)
    c2 = autotune.choose(prep, dense, 120, threads=1)  # same bucket (128): no new measurement
    assert len(calls) == 1 and c1 == c2 and c1.n == 128
    data = json.loads((tmp_path / "autotune.json").read_text())
    assert any(k.endswith("|n128|t1") for k in data["choices"])
    # a new process (simulated by forgetting memory) reads the file instead of measuring
    autotune._memory.clear()
    autotune._loaded = False
    assert autotune.choose(prep, dense, 128, threads=1).kernel == c1.kernel and len(calls) == 1
    # a rebuilt extension (another build signature) measures again instead of trusting the file
    autotune._memory.clear()
    autotune._loaded = False
    monkeypatch.setattr(autotune, "_build_signature", lambda: "another-build")
    autotune.choose(prep, dense, 128, threads=1)
    assert len(calls) == 2
    assert json.loads((tmp_path / "autotune.json").read_text())["build"] == "another-build"


def test_a_choice_measured_in_a_slow_phase_is_measured_again_and_not_filed(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSA_CACHE_DIR", str(tmp_path))
    autotune.clear_cache()
    prep, dense = _weight()
    fastest = kernels_for(prep.packed)[0].name
    clock = {"t": 0.0}
    monkeypatch.setattr(autotune, "_clock", lambda: clock["t"])
    # the probe reads 2.0 (a slow phase) before the first measurement (no need to probe after it), then 1.0
    # before and after the second; the timings hand the first to dense, the second to the kernel
    probes, rounds = iter([2.0, 1.0, 1.0]), iter([(2.0, 1.0), (0.5, 1.0)])
    monkeypatch.setattr(autotune, "pair_slowdown", lambda threads, calls=300: next(probes))

    def timings(fns, reps, threads):
        k_ms, d_ms = next(rounds)
        return {n: d_ms if n == "dense" else k_ms + (n != fastest) for n in fns}

    monkeypatch.setattr(autotune, "_time_all", timings)
    c1 = autotune.choose(prep, dense, 128, threads=2)
    assert c1.kernel == "dense" and c1.provisional
    assert not (tmp_path / "autotune.json").exists() or not json.loads(
        (tmp_path / "autotune.json").read_text())["choices"]
    clock["t"] = autotune.PROVISIONAL_RETRY_S / 2  # too soon: the provisional choice is used as it is
    assert autotune.choose(prep, dense, 128, threads=2) == c1
    clock["t"] = autotune.PROVISIONAL_RETRY_S * 2  # measured again, in a calm phase: filed
    c2 = autotune.choose(prep, dense, 128, threads=2)
    assert c2.kernel == fastest and not c2.provisional
    data = json.loads((tmp_path / "autotune.json").read_text())
    assert [v["kernel"] for v in data["choices"].values()] == [fastest]


def test_a_host_always_in_a_slow_phase_gets_its_choice_filed_after_a_few_tries(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSA_CACHE_DIR", str(tmp_path))
    autotune.clear_cache()
    prep, dense = _weight()
    clock = {"t": 0.0}
    monkeypatch.setattr(autotune, "_clock", lambda: clock["t"])
    monkeypatch.setattr(autotune, "pair_slowdown", lambda threads, calls=300: 2.0)
    calls = []
    monkeypatch.setattr(autotune, "_time_all",
                        lambda fns, reps, threads: calls.append(1) or {n: 1.0 for n in fns})
    for i in range(autotune.PROVISIONAL_TRIES + 2):
        clock["t"] = i * 2 * autotune.PROVISIONAL_RETRY_S
        c = autotune.choose(prep, dense, 128, threads=2)
    assert len(calls) == autotune.PROVISIONAL_TRIES and not c.provisional
    assert json.loads((tmp_path / "autotune.json").read_text())["choices"]


def test_the_probe_compares_threads_with_one():
    assert autotune.pair_slowdown(1) == 1.0
    assert 0.0 < autotune.pair_slowdown(2, calls=20) < 50.0  # a ratio of two timings of the same tiny call


def test_a_damaged_cache_file_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSA_CACHE_DIR", str(tmp_path))
    (tmp_path / "autotune.json").write_text("{not json")
    autotune._memory.clear()
    autotune._loaded = False
    prep, dense = _weight()
    assert autotune.choose(prep, dense, 4, threads=1).kernel in ["dense"] + [k.name for k in kernels_for(prep.packed)]


def test_buckets():
    assert [autotune.n_bucket(n) for n in (1, 3, 8, 9, 16, 17, 128, 129)] == [1, 3, 8, 16, 16, 32, 128, 256]


@pytest.mark.parametrize("winner", ["dense", "sparse"])
def test_sparse_linear_auto_is_correct_on_either_path(monkeypatch, winner):
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(96, 64)
    with torch.no_grad():
        lin.weight.copy_(sparse_weight(64, 96, "unstructured", 0.8, g))
    sl = SparseLinear.from_linear(lin, "unstructured")
    assert sl.auto
    k0 = kernels_for(sl.packed)[0].name
    monkeypatch.setattr(
        autotune, "measure",
        lambda prep, dense, n, threads, **kw: autotune.Choice("dense" if winner == "dense" else k0, {}, n),
    )
    x = torch.randn(5, 7, 96, generator=g)
    with torch.inference_mode():
        y = sl(x)
    torch.testing.assert_close(y, lin(x), rtol=1e-4, atol=1e-4)
    assert sl.kernel_name_for(35) == ("torch dense" if winner == "dense" else k0)
    assert ("dense" in repr(sl)) == (winner == "dense")
