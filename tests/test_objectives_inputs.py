"""The objectives refuse inputs of the wrong kind with one TypeError naming the objective and the
argument: NumPy arrays, lists and Python numbers where a tensor is expected, integer or bool
tensors, tensors on another device (the meta device stands in for a GPU) and mixed float
dtypes (refused, not promoted). The rule lives in ``objectives._checks.same_kind``.

Parametrised over the registry: each objective's inputs are built from its ``inputs`` and
``optional_inputs``, and each is spoilt in each way, through the three ways of calling an
objective (the function, the registry entry, ``Objective.loss``).
"""

import re

import pytest
import torch

import objectives
from objectives import OBJECTIVES

F64 = torch.float64


def _valid(obj, dtype=F64):
    """Valid inputs of every argument ``obj`` takes: (P, N) = (3, 4) groups, (3,) pairs; grpo's
    ``prompt_tokens`` a scalar (no leading axes)."""
    g = torch.Generator().manual_seed(0)
    lead = (3, 4) if obj.data == "groups" else (3,)
    out = {}
    shapes = {"baseline": (3, 1), "prompt_tokens": ()}  # grpo's: one per leading row
    for k in (*obj.inputs, *obj.optional_inputs):
        x = torch.rand(shapes.get(k, lead), generator=g, dtype=F64).to(dtype)
        out[k] = x if k in ("rewards", "baseline", "prompt_tokens") else -0.1 - 3 * x
    return out


# how to spoil a valid float64 cpu tensor, and what the message then says
SPOIL = {
    "numpy": (
        lambda x: x.numpy(),
        r"must be a torch\.Tensor of floating dtype.*got numpy\.ndarray",
    ),
    "list": (
        lambda x: x.tolist() if x.dim() else [x.item()],
        r"must be a torch\.Tensor of floating dtype.*got list",
    ),
    "float": (lambda x: -0.5, r"must be a torch\.Tensor of floating dtype, got float"),
    "int64": (lambda x: x.long(), r"must be a torch\.Tensor of floating dtype, got torch\.int64"),
    "bool": (lambda x: x < -1, r"must be a torch\.Tensor of floating dtype, got torch\.bool"),
    "float32": (lambda x: x.float(), r"torch\.float32.*must share one floating dtype"),
    "meta": (lambda x: x.to("meta"), r"is on (meta|cpu) but \w+ on (cpu|meta)"),
}

CALLS = {
    "function": lambda name, kw: getattr(objectives, name)(**kw),
    "entry": lambda name, kw: OBJECTIVES[name](**kw),
    "loss": lambda name, kw: OBJECTIVES[name].loss(kw),
}

CASES = [
    (name, arg, kind)
    for name, obj in OBJECTIVES.items()
    for arg in (*obj.inputs, *obj.optional_inputs)
    for kind in SPOIL
    if not (arg == "baseline" and kind == "float")  # a number is a valid baseline
    # a lone input (SFT's) has no other to differ from in device or dtype
    and not (kind in ("float32", "meta") and len(obj.inputs) + len(obj.optional_inputs) == 1)
]


def _refused(call, name, kw, arg, pattern):
    with pytest.raises(TypeError) as info:
        call(name, kw)
    msg = str(info.value)
    assert msg.startswith(f"{name}: "), msg
    assert arg in msg, msg
    assert re.search(pattern, msg), msg
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("path", sorted(CALLS))
@pytest.mark.parametrize("name, arg, kind", CASES)
def test_wrong_kind_refused_naming_objective_and_argument(name, arg, kind, path):
    kw = _valid(OBJECTIVES[name])
    spoil, pattern = SPOIL[kind]
    kw[arg] = spoil(kw[arg])
    _refused(CALLS[path], name, kw, arg, pattern)


def test_every_objective_and_input_is_covered():
    assert len(OBJECTIVES) == 26
    covered = {(n, a) for n, a, _ in CASES}
    assert covered == {
        (n, a) for n, o in OBJECTIVES.items() for a in (*o.inputs, *o.optional_inputs)
    }


def test_exact_messages():
    kw = _valid(OBJECTIVES["dpo"])
    for arg, value, expected in [
        ("chosen_logps", kw["chosen_logps"].numpy(), "got numpy.ndarray"),
        ("chosen_logps", kw["chosen_logps"].long(), "got torch.int64"),
    ]:
        bad = {**kw, arg: value}
        with pytest.raises(TypeError) as info:
            objectives.dpo(**bad)
        assert str(info.value) == f"dpo: {arg} must be a torch.Tensor of floating dtype, {expected}"
    with pytest.raises(TypeError) as info:
        objectives.dpo(**{**kw, "ref_chosen_logps": kw["ref_chosen_logps"].to("meta")})
    assert str(info.value) == "dpo: ref_chosen_logps is on meta but chosen_logps on cpu"
    with pytest.raises(TypeError) as info:
        objectives.dpo(**{**kw, "rejected_logps": kw["rejected_logps"].float()})
    assert str(info.value).startswith(
        "dpo: rejected_logps is torch.float32 but chosen_logps torch.float64"
    )


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_valid_inputs_keep_their_dtype_and_python_hparams_pass(name, dtype):
    obj = OBJECTIVES[name]
    kw = _valid(obj, dtype)
    hp = {k: 0.3 for k, v in obj.defaults.items() if isinstance(v, float)}
    for path in CALLS.values():
        loss = path(name, {**kw, **hp}) if path is not CALLS["loss"] else obj.loss(kw, **hp)
        assert loss.dtype == dtype and bool(torch.isfinite(loss).all())


@pytest.mark.parametrize(
    "name", sorted(n for n, o in OBJECTIVES.items() if "baseline" in o.optional_inputs)
)
def test_number_baseline_accepted_like_its_tensor(name):
    kw = _valid(OBJECTIVES[name])
    as_number = objectives.get(name).loss({**kw, "baseline": 0.25})
    as_tensor = objectives.get(name).loss({**kw, "baseline": torch.tensor(0.25, dtype=F64)})
    assert torch.equal(as_number, as_tensor)
    for bad, pattern in [(True, "got bool"), ("0.25", "got str"), ([0.25], "got list")]:
        msg = _refused(CALLS["entry"], name, {**kw, "baseline": bad}, "baseline", pattern)
        assert "or a Python number" in msg


@pytest.mark.parametrize("name", sorted(n for n, o in OBJECTIVES.items() if o.data == "pairs"))
def test_ignored_ref_inputs_still_checked(name):
    """Reference-free pairwise objectives accept and ignore ``ref_*``: they are still checked."""
    kw = _valid(OBJECTIVES[name])
    kw.setdefault("ref_chosen_logps", kw["chosen_logps"].clone())
    kw["ref_rejected_logps"] = kw["rejected_logps"].numpy()
    _refused(CALLS["function"], name, kw, "ref_rejected_logps", "got numpy.ndarray")


def test_ppo_token_mask_may_be_bool_but_must_be_a_tensor_on_the_device():
    """Through the function: the registry entry's hyperparameter rule refuses a non-tensor
    ``token_mask`` first (a UserError)."""
    g = torch.Generator().manual_seed(1)
    logps = -0.1 - torch.rand(3, 4, 5, generator=g, dtype=F64)
    kw = dict(logps=logps, old_logps=logps - 0.1, rewards=torch.rand(3, 4, generator=g, dtype=F64))
    mask = torch.rand(3, 4, 5, generator=g) < 0.7
    by_bool = objectives.ppo(**kw, token_mask=mask)
    assert torch.equal(by_bool, objectives.ppo(**kw, token_mask=mask.to(F64)))
    assert torch.equal(by_bool, objectives.ppo(**kw, token_mask=mask.long()))
    for bad, pattern in [
        (mask.numpy(), r"must be a torch\.Tensor, got numpy\.ndarray"),
        (mask.to("meta"), "is on meta but logps on cpu"),
        (mask.float(), "is torch.float32 but logps torch.float64"),
    ]:
        _refused(CALLS["function"], "ppo", {**kw, "token_mask": bad}, "token_mask", pattern)
    _refused(
        CALLS["entry"],
        "ppo",
        {**kw, "token_mask": mask, "rewards": kw["rewards"].long()},
        "rewards",
        "got torch.int64",
    )


def test_kind_checked_within_values_checked_once():
    kw = _valid(OBJECTIVES["ipo"])
    with objectives.values_checked_once():
        _refused(
            CALLS["function"], "ipo", {**kw, "chosen_logps": [-1.0] * 3}, "chosen_logps", "list"
        )


def test_tensor_hyperparameter_of_a_batched_sweep_passes():
    kw = _valid(OBJECTIVES["dpo"])
    beta = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    rows = [
        objectives.dpo(**{k: v[i : i + 1] for k, v in kw.items()}, beta=float(beta[i]))
        for i in range(3)
    ]
    assert torch.allclose(OBJECTIVES["dpo"].loss(kw, beta=beta), torch.cat(rows))
