"""Backpropagation that keeps only each step's inputs: the step runs without autograd and
is rebuilt in the backward pass (checkpointing, Griewank & Walther, "Algorithm 799: revolve",
2000; Chen et al., "Training deep nets with sublinear memory cost", 2016).

``torch.utils.checkpoint`` drops a region's saved tensors but keeps its autograd nodes, and a
Rosenbrock step's differentiable Jacobian (``jacrev`` with ``create_graph``) is hundreds of
nodes: on GRI-Mech it still kept 0.8 MB a step.  Here the forward pass builds no graph at all;
the price is that the parameters must be known, so recomputation applies when ``func`` is an
``nn.Module`` whose parameters are every tensor f differentiates through (torchdiffeq's
``odeint_adjoint`` asks the same of its ``adjoint_params``).
"""

from __future__ import annotations

import torch


def differentiated_leaves(output: torch.Tensor) -> list:
    """The leaf tensors that require grad and that ``output``'s graph reaches."""
    leaves, seen = [], set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)      # AccumulateGrad: a leaf
        if variable is not None:
            leaves.append(variable)
        stack.extend(edge[0] for edge in node.next_functions)
    return leaves


def recomputable_parameters(func, output: torch.Tensor) -> tuple | None:
    """``func``'s parameters when they are every leaf its ``output`` (f evaluated with y
    detached) reaches, else None (f differentiates through tensors it does not own)."""
    params = tuple(p for p in func.parameters() if p.requires_grad) if isinstance(func, torch.nn.Module) else ()
    owned = {id(p) for p in params}
    if not output.requires_grad or all(id(leaf) in owned for leaf in differentiated_leaves(output)):
        return params
    return None


class Recomputed(torch.autograd.Function):
    """``Recomputed.apply(run, sink, n_inputs, *inputs, *params)``: ``run(*inputs) -> (outputs,
    extra)`` without autograd, ``outputs`` a tuple of tensors, ``extra`` (not differentiated)
    appended to the list ``sink``.  The backward pass runs it again with autograd from the
    saved inputs and differentiates the outputs with respect to the inputs and ``params``
    (which ``run`` reaches through ``func``), so the graph between steps holds one node per
    step."""

    @staticmethod
    def forward(ctx, run, sink, n_inputs, *args):
        inputs = args[:n_inputs]
        ctx.run, ctx.params = run, args[n_inputs:]
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            outputs, extra = run(*inputs)
        sink.append(extra)
        return outputs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        needs = ctx.needs_input_grad[3:]
        inputs = [x.detach().requires_grad_(need) for x, need in zip(ctx.saved_tensors, needs)]
        wanted = [x for x, need in zip([*inputs, *ctx.params], needs) if need]
        with torch.enable_grad():
            outputs, _ = ctx.run(*inputs)
            pairs = [(out, g) for out, g in zip(outputs, grads) if out.requires_grad]
            found = (torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True,
                                         retain_graph=True) if wanted and pairs else [None] * len(wanted))
        found = iter(found)
        return (None, None, None, *(next(found) if need else None for need in needs))
