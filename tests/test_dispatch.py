"""The kernel registry: lazy loaders, preference order, GMCORE_KERNELS overrides, errors."""
import pytest

from gmcore import dispatch

FAM = "_testfam"


@pytest.fixture
def fam(monkeypatch):
    monkeypatch.delenv("GMCORE_KERNELS", raising=False)
    dispatch.reset()
    calls = []

    def ok(name):
        def loader():
            calls.append(name)
            return lambda: name
        return loader

    def broken():
        calls.append("broken")
        raise ImportError("needs libfoo")

    dispatch.register(FAM, "forward", "cpu", "broken", broken)
    dispatch.register(FAM, "forward", "cpu", "fast", ok("fast"))
    dispatch.register(FAM, "forward", "cpu", "reference", ok("reference"))
    dispatch.register(FAM, "backward", "cpu", "reference", ok("reference-bw"))
    dispatch.register(FAM, "forward", "cuda", "gpu", ok("gpu"))
    yield calls
    dispatch.unregister(FAM)
    dispatch.reset()


def _use(monkeypatch, value):
    monkeypatch.setenv("GMCORE_KERNELS", value)
    dispatch.reset()


def test_registering_runs_no_loader(fam):
    assert fam == []


def test_first_available_in_registration_order(fam):
    name, impl = dispatch.choose(FAM, "forward", "cpu")
    assert name == "fast" and impl() == "fast"
    assert fam == ["broken", "fast"]  # the reference loader was never needed
    dispatch.get(FAM, "forward", "cpu")
    assert fam == ["broken", "fast"]  # cached


def test_device_objects_and_indices(fam):
    class Dev:
        type = "cpu"
    assert dispatch.choose(FAM, "forward", Dev())[0] == "fast"
    assert dispatch.choose(FAM, "forward", "cuda:0")[0] == "gpu"
    with pytest.raises(ValueError, match="unknown device"):
        dispatch.get(FAM, "forward", "tpu")


def test_set_preference(fam):
    dispatch.set_preference(FAM, "cpu", ["reference"])
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "reference"


def test_env_reference_everywhere(fam, monkeypatch):
    _use(monkeypatch, "reference")
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "reference"
    assert dispatch.choose(FAM, "backward", "cpu")[0] == "reference"
    # no reference on cuda in this toy family: the override does not apply there
    assert dispatch.choose(FAM, "forward", "cuda")[0] == "gpu"


def test_env_per_family(fam, monkeypatch):
    _use(monkeypatch, f"{FAM}=reference")
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "reference"
    _use(monkeypatch, f"reference, {FAM}=fast")  # per-family entry wins over the global one
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "fast"


def test_env_unavailable_is_an_error_not_a_fallback(fam, monkeypatch):
    _use(monkeypatch, f"{FAM}=broken")
    with pytest.raises(dispatch.KernelUnavailable, match=r"_testfam=broken.*needs libfoo"):
        dispatch.get(FAM, "forward", "cpu")


def test_env_op_missing_for_implementation(fam, monkeypatch):
    _use(monkeypatch, f"{FAM}=fast")
    with pytest.raises(dispatch.KernelUnavailable, match="no op 'backward'"):
        dispatch.get(FAM, "backward", "cpu")


@pytest.mark.parametrize("value, match", [
    (f"{FAM}=nope", "has no implementation 'nope'"),
    ("nosuchfamily=cpp", "unknown kernel family 'nosuchfamily'"),
    ("fastest", "not understood"),
    (f"{FAM}=", "malformed"),
])
def test_env_errors_name_the_problem(fam, monkeypatch, value, match):
    _use(monkeypatch, value)
    with pytest.raises(ValueError, match=match):
        dispatch.get(FAM, "forward", "cpu")


def test_unknown_family_and_op(fam):
    with pytest.raises(ValueError, match="unknown kernel family"):
        dispatch.get("nosuchfamily", "forward", "cpu")
    with pytest.raises(dispatch.KernelUnavailable, match="no implementation of op 'inverse'"):
        dispatch.get(FAM, "inverse", "cpu")


def test_nothing_available(monkeypatch):
    monkeypatch.delenv("GMCORE_KERNELS", raising=False)
    dispatch.reset()
    dispatch.register(FAM, "forward", "cpu", "a", lambda: (_ for _ in ()).throw(RuntimeError("no a")))
    try:
        with pytest.raises(dispatch.KernelUnavailable, match="a: RuntimeError: no a"):
            dispatch.get(FAM, "forward", "cpu")
    finally:
        dispatch.unregister(FAM)


def test_available_and_table(fam):
    rows = {(r.name, r.device): r for r in dispatch.available(FAM)}
    assert rows[("broken", "cpu")].available is False
    assert "needs libfoo" in rows[("broken", "cpu")].reason
    assert rows[("fast", "cpu")].available and not rows[("fast", "cpu")].active  # no backward op
    assert rows[("reference", "cpu")].ops == ("forward", "backward")
    assert rows[("gpu", "cuda")].active
    text = dispatch.format_table()
    assert FAM in text and "needs libfoo" in text and "logsumexp" in text


def test_reset_rereads_environment(fam, monkeypatch):
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "fast"
    monkeypatch.setenv("GMCORE_KERNELS", f"{FAM}=reference")
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "fast"  # cached until reset
    dispatch.reset()
    assert dispatch.choose(FAM, "forward", "cpu")[0] == "reference"
