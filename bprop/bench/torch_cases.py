"""PyTorch's CPU kernels for the same computations as the layers, when torch imports.

Direct ops, no autograd bookkeeping: ``torch.relu`` + ``aten.threshold_backward``;
``torch.sigmoid`` + ``aten.sigmoid_backward``; ``torch.addmm`` forward and two
``torch.mm`` plus ``sum`` backward for Affine; ``torch.log_softmax`` +
``nll_loss`` forward and their ``aten`` backward ops for SoftmaxWithLoss
(integer labels).
"""
import numpy as np

def torch_module():
    """The torch module, or None when it does not import."""
    try:
        import torch
    except Exception:  # ImportError, or a broken install raising something else
        return None
    return torch


def torch_missing_reason():
    """Why torch is not compared (None when it imports)."""
    try:
        import torch  # noqa: F401
    except Exception as exc:
        return f"PyTorch is not importable ({type(exc).__name__}: {exc}); install torch to compare against it"
    return None


def torch_case(layer, inp):
    torch = torch_module()
    if torch is None:
        raise RuntimeError(torch_missing_reason())
    aten = torch.ops.aten
    T = {k: torch.from_numpy(v) for k, v in inp.items()}
    state = {}

    def np_(t):
        return t.detach().numpy().copy()

    if layer == "relu":
        x, dout = T["x"], T["dout"]
        relu, thb = torch.relu, aten.threshold_backward

        def forward():
            out = relu(x)
            state["out"] = out
            return out

        def backward():
            return thb(dout, state["out"], 0)

        def both():
            out = relu(x)
            state["out"] = out
            return thb(dout, out, 0)

        def results():
            out = forward()
            return {"out": np_(out), "dx": np_(backward())}

    elif layer == "sigmoid":
        x, dout = T["x"], T["dout"]
        sig, sgb = torch.sigmoid, aten.sigmoid_backward

        def forward():
            out = sig(x)
            state["out"] = out
            return out

        def backward():
            return sgb(dout, state["out"])

        def both():
            out = sig(x)
            state["out"] = out
            return sgb(dout, out)

        def results():
            out = forward()
            return {"out": np_(out), "dx": np_(backward())}

    elif layer == "affine":
        x, W, b, dout = T["x"], T["W"], T["b"], T["dout"]
        Wt, xt = W.t(), x.t()
        addmm, mm = torch.addmm, torch.mm

        def forward():
            return addmm(b, x, W)

        def backward():
            dx = mm(dout, Wt)
            state["dW"] = mm(xt, dout)
            state["db"] = dout.sum(0)
            return dx

        def both():
            addmm(b, x, W)
            return backward()

        def results():
            out = forward()
            dx = backward()
            return {"out": np_(out), "dx": np_(dx), "dW": np_(state["dW"]), "db": np_(state["db"])}

    elif layer == "softmax":
        x, t = T["x"], T["t"]
        one = torch.ones((), dtype=x.dtype)
        log_softmax, nll, nll_b, lsm_b = torch.log_softmax, aten.nll_loss_forward, aten.nll_loss_backward, \
            aten._log_softmax_backward_data
        dtype = x.dtype

        def forward():
            ls = log_softmax(x, 1)
            loss, tw = nll(ls, t, None, 1, -100)  # reduction 1 = mean
            state["ls"], state["tw"] = ls, tw
            return loss

        def backward():
            ls = state["ls"]
            return lsm_b(nll_b(one, ls, t, None, 1, -100, state["tw"]), ls, 1, dtype)

        def both():
            forward()
            return backward()

        def results():
            loss = forward()
            y = state["ls"].exp()
            return {"loss": np.array(float(loss)), "y": np_(y), "dx": np_(backward())}

    else:
        raise ValueError(f"unknown layer {layer!r}")
    from .cases import Case

    return Case(forward, backward, both, results)
