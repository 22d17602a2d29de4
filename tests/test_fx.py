"""torch.fx symbolic tracing as timm 1.0.31's own ``tests/test_models.py`` checks it (``test_model_forward_fx``,
``test_model_backward_fx``), on the smallest variant of every zoo family (every family-name prefix: each Agent /
InLine skeleton, the STL variants; plus ``tiny_moat_0`` for MOAT's relative position bias), and timm's FX feature
extraction (``feature_cls='fx'``) on an NA and a non-NA family.

The traced graph is built as timm's ``_create_fx_model`` builds it: torchvision's ``create_feature_extractor`` with
timm's notrace modules and functions as leaves (``ops._fx`` registers the ops'; the backbones register their
size-dependent blocks). Inputs are 64 px (timm: 128) and the slowest models have fewer blocks (``REDUCED``), to
keep every family within the CI budget.
"""
import pytest
import timm
import torch
from _zoo import smallest_per_family
from timm.models import get_notrace_functions, get_notrace_modules
from torchvision.models.feature_extraction import NodePathTracer, create_feature_extractor, get_graph_node_names

import ops

# + variants with a code path their family's smallest lacks: tiny-MOAT's relative position bias (*_no_pe has none)
MODELS = sorted({*smallest_per_family(), 'tiny_moat_0'})
SIZE = 64
ONE = (1, 1, 1, 1)
# fewer blocks where the full smallest model takes seconds per test (the same block types)
REDUCED = {'glnet_4g': dict(depths=(1, 1, 2, 1), embed_dims=(32, 64, 96, 128)), 'glnet_stl': dict(depths=ONE),
           'glnet_stl_paramslot': dict(depths=ONE), 'maxvit_na_tiny_tf_224': dict(depths=ONE)}

pytestmark = [pytest.mark.usefixtures('one_thread'),
              pytest.mark.filterwarnings('ignore:NOTE. The nodes obtained by tracing:UserWarning')]


def _create_fx_model(model: torch.nn.Module, train: bool = False) -> torch.nn.Module:
    """timm's ``_create_fx_model``: the graph up to the model's output, in eval or train mode."""
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(),
                         param_shapes_constant=True)
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    eval_return_nodes, train_return_nodes = [eval_nodes[-1]], [train_nodes[-1]]
    if train:  # the train-mode nodes that feed the output node
        graph_nodes = list(reversed(NodePathTracer(**tracer_kwargs).trace(model).nodes))
        output_names = [n.name for n in graph_nodes[0]._input_nodes.keys()]
        names = [n.name for n in graph_nodes]
        train_return_nodes = [train_nodes[-names.index(name)] for name in output_names]
    return create_feature_extractor(model, train_return_nodes=train_return_nodes,
                                    eval_return_nodes=eval_return_nodes, tracer_kwargs=tracer_kwargs)


def test_ops_are_leaves():
    """Every public op function and module is in timm's notrace registry, and a traced op call is one node."""
    functions, modules = set(get_notrace_functions()), set(get_notrace_modules())
    assert all((leaf in modules) if isinstance(leaf, type) else (leaf in functions) for leaf in ops.FX_LEAVES)

    class Net(torch.nn.Module):
        def forward(self, q, k, v):
            return ops.na2d(q, k, v, 3)

    graph = torch.fx.symbolic_trace(Net())
    assert [n.target for n in graph.graph.nodes if n.op == 'call_function'] == [ops.na.na2d]
    q, k, v = torch.randn(3, 1, 5, 6, 2, 4).unbind(0)
    assert torch.equal(graph(q, k, v), ops.na2d(q, k, v, 3))


@pytest.mark.parametrize('name', MODELS)
def test_model_forward_fx(name):
    model = timm.create_model(name, **REDUCED.get(name, {})).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        out = model(x)
        fx_out = torch.cat(tuple(_create_fx_model(model)(x).values()))
    assert torch.all(fx_out == out)
    assert out.shape[0] == 1 and not torch.isnan(out).any()


@pytest.mark.parametrize('name', MODELS)
def test_model_backward_fx(name):
    model = timm.create_model(name, num_classes=42, **REDUCED.get(name, {})).train()
    num_params = sum(p.numel() for p in model.parameters())
    fx_model = _create_fx_model(model, train=True)
    out = torch.cat(tuple(fx_model(torch.randn(2, 3, SIZE, SIZE)).values()))
    out.mean().backward()
    missing = [n for n, p in fx_model.named_parameters() if p.grad is None]
    assert not missing, f'no gradient for {missing[:5]}'
    assert out.shape[-1] == 42 and not torch.isnan(out).any()
    assert sum(p.grad.numel() for p in fx_model.parameters()) == num_params


@pytest.mark.parametrize('name', ['nat_mini', 'ravlt_tiny'])
def test_fx_feature_extraction(name):
    """timm's FX feature extractor (``features_only`` with ``feature_cls='fx'``) returns the hook-free extractor's
    features at every level."""
    torch.manual_seed(0)
    fx = timm.create_model(name, features_only=True, feature_cfg={'feature_cls': 'fx'}).eval()
    torch.manual_seed(0)  # the same weights
    plain = timm.create_model(name, features_only=True).eval()
    x = torch.randn(1, 3, SIZE, SIZE + 32)
    with torch.inference_mode():
        got, want = fx(x), plain(x)
    assert len(got) == len(want) == len(fx.feature_info.out_indices)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
