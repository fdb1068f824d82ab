"""Central finite differences against an analytic gradient (docs/api.md section 5)."""
import numpy as np

from .errors import GradcheckError


def gradcheck(f, *arrays, eps=None, rtol=None, atol=None):
    """Check ``f(*arrays) -> (loss, grad_1, ..., grad_k)`` by central differences in float64.

    ``f`` gets float64 copies of the float arrays (other arrays, e.g. integer labels, as given)
    and returns a scalar loss and one gradient per array (``None`` for an array not to check).
    Each entry ``x`` is moved by ``+-eps * max(1, |x|)`` (``eps`` default 1e-6).

    An entry passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` (``numpy.isclose``;
    defaults ``rtol=1e-5``, ``atol=1e-7``). Returns the largest
    ``|analytic - numeric| / (atol / rtol + |numeric|)``, a relative error with an absolute floor
    that is ``<= rtol`` exactly when every entry passes; otherwise raises ``GradcheckError`` naming
    the array and the index of the worst entry.
    """
    eps = 1e-6 if eps is None else float(eps)
    rtol = 1e-5 if rtol is None else float(rtol)
    atol = 1e-7 if atol is None else float(atol)
    if not (eps > 0 and rtol > 0 and atol >= 0):
        raise ValueError(f"eps and rtol must be > 0 and atol >= 0, got {eps}, {rtol}, {atol}")
    xs = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a for a in arrays]

    def loss_of(*args):
        loss = f(*args)[0]
        if np.ndim(loss) != 0:
            raise ValueError(f"f must return a scalar loss first, got shape {np.shape(loss)}")
        return float(loss)

    result = f(*xs)
    grads = result[1:]
    if len(grads) != len(xs):
        raise ValueError(f"f returned {len(grads)} gradients for {len(xs)} arrays; "
                         f"use None for an array not to check")
    worst = (0.0, None, None, 0.0, 0.0)
    for k, (x, g) in enumerate(zip(xs, grads)):
        if g is None:
            continue
        if not (isinstance(x, np.ndarray) and x.dtype == np.float64):
            raise TypeError(f"arrays[{k}] is not a float array; return None as its gradient")
        g = np.asarray(g, dtype=np.float64)
        if g.shape != x.shape:
            raise ValueError(f"gradient {k} has shape {g.shape}, arrays[{k}] has {x.shape}")
        for idx in np.ndindex(x.shape):
            orig = x[idx]
            step = eps * max(1.0, abs(orig))
            x[idx] = orig + step
            up = loss_of(*xs)
            x[idx] = orig - step
            down = loss_of(*xs)
            x[idx] = orig
            numeric = (up - down) / (2 * step)
            err = abs(g[idx] - numeric) / (atol / rtol + abs(numeric))
            if not err <= worst[0] and not np.isnan(worst[0]):   # a NaN is the worst
                worst = (err, k, idx, g[idx], numeric)
    err, k, idx, analytic, numeric = worst
    if not err <= rtol:
        raise GradcheckError(f"gradient of arrays[{k}] at index {idx}: analytic {analytic:.10g}, "
                             f"numeric {numeric:.10g}, relative error {err:.3g} > rtol {rtol:g}")
    return float(err)
