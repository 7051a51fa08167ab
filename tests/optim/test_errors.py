"""Bad input is refused loudly, with the exception type and message the table names.

Each ``ErrorCase`` is tried through the constructor and again through ``add_param_group`` (a per-group
override); a refused group must not be left behind in ``param_groups``.
"""

from __future__ import annotations

import warnings

import cases
import pytest
import torch
from cases import CLASSES, OPTIMIZER_CASES, OptimizerCase, case_params, error_params


def _param(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.randn(*shape, generator=gen).to(dtype))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", error_params())
def test_constructor_rejects(cls, case, gen):
    with pytest.raises(case.error, match=case.match):
        cls([_param(gen, 3)], **case.kwargs)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", error_params())
def test_add_param_group_rejects_and_keeps_nothing(cls, case, gen):
    first, second = _param(gen, 3), _param(gen, 2)
    opt = cls([first])
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(case.error, match=case.match):
        opt.add_param_group({"params": [second], **case.kwargs})
    assert opt.param_groups == before, "a refused group was left in param_groups"


@pytest.mark.parametrize("key, value", [("polyak_beta", 0.5), ("loss_floor", 0.1), ("nonfinite", "raise")])
def test_global_hyperparameter_cannot_differ_per_group(key, value, gen):
    opt = cases.ScheduleFreePlus([_param(gen, 3)])
    with pytest.raises(ValueError, match=rf"Invalid {key} value: .* {key} is global"):
        opt.add_param_group({"params": [_param(gen, 2)], key: value})
    assert len(opt.param_groups) == 1


def test_tiny_weight_decay_warns_once(gen):
    with pytest.warns(UserWarning, match=r"weight_decay=0\.1 is tiny .* 5-50") as record:
        cases.ScheduleFreePlus([_param(gen, 3)], weight_decay=0.1)
    assert len([w for w in record if "weight_decay" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cases.ScheduleFreePlus([_param(gen, 3)], weight_decay=20.0)  # AdamC-sized: no warning


# ---------------------------------------------------------------------------------- param structure
@pytest.mark.parametrize("cls", CLASSES)
def test_bare_tensor_is_a_type_error(cls, gen):
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        cls(_param(gen, 3))


@pytest.mark.parametrize("cls", CLASSES)
def test_empty_parameter_list(cls):
    with pytest.raises(ValueError, match="empty parameter list"):
        cls([])


@pytest.mark.parametrize("cls", CLASSES)
def test_tensor_in_two_groups(cls, gen):
    p = _param(gen, 3)
    with pytest.raises(ValueError, match="more than one parameter group"):
        cls([{"params": [p]}, {"params": [p]}])


@pytest.mark.parametrize("cls", CLASSES)
def test_duplicate_in_one_group_warns(cls, gen):
    p = _param(gen, 3)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        cls([p, p])


@pytest.mark.parametrize("cls", CLASSES)
def test_named_parameters_are_accepted(cls, gen):
    model = torch.nn.Linear(3, 2)
    opt = cls(model.named_parameters())
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", case_params(OPTIMIZER_CASES[:3]))
def test_complex_params_are_refused(cls, case: OptimizerCase, gen):
    p = torch.nn.Parameter(torch.randn(3, generator=gen, dtype=torch.complex64))
    with pytest.raises(TypeError, match=rf"{cls.__name__} does not support complex parameters yet"):
        case.make(cls, [p])
    opt = case.make(cls, [_param(gen, 2)])
    with pytest.raises(TypeError, match="complex"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_integer_params_are_refused(cls):
    with pytest.raises(TypeError, match=r"does not support torch\.int64 parameters"):
        cls([torch.zeros(3, dtype=torch.int64)])


# ---------------------------------------------------------------------------------- API misuse
def _stepped(cls, gen, **kwargs):
    p = _param(gen, 4)
    opt = cls([p], **kwargs)
    loss = (p**2).sum()
    loss.backward()
    return p, opt, loss


@pytest.mark.parametrize("cls", CLASSES)
def test_step_in_eval_mode_raises(cls, gen):
    p, opt, loss = _stepped(cls, gen)
    opt.eval()
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match=r"call optimizer\.train\(\) before step\(\)"):
        opt.step(loss=loss)
    assert torch.equal(p.detach(), before)
    opt.train()
    opt.step(loss=loss)  # fine again in train mode
    assert opt.stats["k"] == 1


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", case_params())
def test_missing_loss_names_both_ways(cls, case: OptimizerCase, gen):
    p = _param(gen, 4)
    opt = case.make(cls, [p])
    (p**2).sum().backward()
    with pytest.raises(ValueError, match=r"step\(closure\).*step\(loss=loss\)"):
        opt.step()
    assert not opt.state[p], "a refused step created state"


@pytest.mark.parametrize("cls", CLASSES)
def test_closure_returning_none_is_a_missing_loss(cls, gen):
    p, opt, _ = _stepped(cls, gen)
    with pytest.raises(ValueError, match=r"closure.*loss="):
        opt.step(lambda: None)


@pytest.mark.parametrize("cls", CLASSES)
def test_closure_and_loss_together(cls, gen):
    p, opt, loss = _stepped(cls, gen)
    with pytest.raises(TypeError, match="both a closure and loss="):
        opt.step(lambda: loss, loss=loss)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad", [torch.ones(2), torch.ones(1, 3), torch.tensor(1.0 + 1.0j)], ids=["vec", "mat", "cplx"])
def test_loss_must_be_a_real_scalar(cls, bad, gen):
    p, opt, _ = _stepped(cls, gen)
    with pytest.raises(ValueError, match="the loss must be a real scalar"):
        opt.step(loss=bad)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("bad", ["0.5", True, [0.5]], ids=["str", "bool", "list"])
def test_loss_of_wrong_type(cls, bad, gen):
    p, opt, _ = _stepped(cls, gen)
    with pytest.raises(TypeError, match="the loss must be a float or a 0-D tensor"):
        opt.step(loss=bad)


@pytest.mark.parametrize("cls", CLASSES)
def test_loss_forms_are_equivalent(cls, gen):
    """A float, a 0-D tensor, a 1-element tensor and a closure give the same step."""
    results = []
    for form in ("float", "tensor", "one_element", "closure"):
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))
        opt = cls([p])
        loss = (p**2).sum()
        loss.backward()
        if form == "closure":
            opt.step(lambda loss=loss: loss)
        else:
            value = {"float": loss.item(), "tensor": loss, "one_element": loss.reshape(1)}[form]
            opt.step(loss=value)
        results.append(p.detach().clone())
    for got in results[1:]:
        assert torch.equal(got, results[0])


@pytest.mark.parametrize("cls", CLASSES)
def test_sparse_gradient_is_refused(cls, gen):
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = cls(emb.parameters())
    loss = emb(torch.tensor([0, 2])).sum()
    loss.backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=rf"{cls.__name__} does not support sparse gradients"):
        opt.step(loss=loss)
    assert torch.equal(emb.weight.detach(), before)


@pytest.mark.parametrize("cls", CLASSES)
def test_numpy_scalar_loss_is_accepted(cls, gen):
    np = pytest.importorskip("numpy")
    results = []
    for value in (np.float32(0.75), 0.75):
        p = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))
        opt = cls([p])
        (p**2).sum().backward()
        opt.step(loss=value)
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])
