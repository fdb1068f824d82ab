"""A PyTorch training loop with fastbp's fused output layer: a small MLP body, then
fastbp.torch.LinearHead (linear layer + softmax cross-entropy in one fused call), compiled whole
by torch.compile (fastbp's kernels are custom operators: no graph break), on scikit-learn's
digits. Run: python docs/examples/torch_digits.py"""
import torch
from sklearn.datasets import load_digits

import fastbp.torch as fbt

torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = torch.tensor(X / 16.0, dtype=torch.float32)
y = torch.tensor(y)
train, test = slice(0, 1500), slice(1500, None)

body = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())
head = fbt.LinearHead(64, 10)                       # nn.Linear's parameters, fused loss
opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-2)


@torch.compile(fullgraph=True)                      # one graph: body, fused head, backward
def loss_fn(X, y):
    return head(body(X), y)


for epoch in range(20):
    for i in range(0, 1500, 100):
        opt.zero_grad()
        loss = loss_fn(X[train][i:i + 100], y[train][i:i + 100])
        loss.backward()
        opt.step()

with torch.no_grad():                               # only the loss: no gradient work
    test_loss = loss_fn(X[test], y[test])
    accuracy = (head.logits(body(X[test])).argmax(1) == y[test]).float().mean()
print(f"last batch loss {loss.item():.4f}, test loss {test_loss.item():.4f}, "
      f"test accuracy {accuracy.item():.3f}")
