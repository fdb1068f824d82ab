"""A JAX training loop on fastbp's fused kernels: a small MLP body in jax.numpy, the output layer
and its softmax cross-entropy as fastbp.jax.linear_head, one jitted step with jax.grad, on
scikit-learn's digits. Run: python docs/examples/jax_digits.py"""
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits

import fastbp.jax as fbj

X, y = load_digits(return_X_y=True)
X, y = (X / 16.0).astype(np.float32), y.astype(np.int32)
train, test = slice(0, 1500), slice(1500, None)
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
params = {"W1": jax.random.normal(k1, (64, 64)) * (2 / 64) ** 0.5, "b1": jnp.zeros(64),
          "W2": jax.random.normal(k2, (10, 64)) * (1 / 64) ** 0.5, "b2": jnp.zeros(10)}


def loss_fn(p, X, y):
    h = jax.nn.relu(X @ p["W1"].T + p["b1"])
    return fbj.linear_head(h, p["W2"], p["b2"], y)        # fused linear + softmax_nll


@jax.jit
def step(p, X, y):
    loss, grads = jax.value_and_grad(loss_fn)(p, X, y)
    return jax.tree.map(lambda a, g: a - 0.5 * g, p, grads), loss


for epoch in range(20):
    for i in range(0, 1500, 100):
        params, loss = step(params, X[train][i:i + 100], y[train][i:i + 100])

h = jax.nn.relu(X[test] @ params["W1"].T + params["b1"])
accuracy = float(jnp.mean(jnp.argmax(h @ params["W2"].T + params["b2"], 1) == y[test]))
test_loss = float(loss_fn(params, X[test], y[test]))
print(f"last batch loss {float(loss):.4f}, test loss {test_loss:.4f}, "
      f"test accuracy {accuracy:.3f}")
