"""The probe API on your own features: usable information of two "layers" about two label sets,
then the lower-level batched fit for people who manage probes themselves.

    python examples/probe_api.py
"""
import torch

import uinfo_fast as uf
from uinfo_fast.tasks import layered_features

# Stand-ins for cached activations: name -> [N, D] tensors, labels name -> [N] int64.
train_x, train_y, test_x, test_y = layered_features(n_train=4000, n_test=2000, d=64, n_sets=2)

# One call: penalty chosen per (layer, label set) on a validation split, scored on test, in bits.
result = uf.estimate_usable_information(train_x, train_y, test_x, test_y, n_bootstrap=500)
print(result)
r = result["layer2", "fine"]
print(f"layer2 holds {r.bits:.3f} bits about the fine label (95% CI {r.ci_low:.3f}..{r.ci_high:.3f}, "
      f"H = {r.entropy_bits:.3f} bits, l2 = {r.l2:.1e})")

# Next checkpoint: warm-start from the previous measurement, far fewer L-BFGS iterations.
moved = {k: v + 0.01 * torch.randn_like(v) for k, v in train_x.items()}
again = uf.estimate_usable_information(moved, train_y, test_x, test_y, warm_start=result, n_bootstrap=0)
print("iterations cold:", {k: int(f.n_iter.sum()) for k, f in result.fits.items()},
      "warm:", {k: int(f.n_iter.sum()) for k, f in again.fits.items()})

# Lower level: every (label set, l2) probe on one feature matrix in one op call.
fit = uf.fit_probes(train_x["layer2"], train_y, l2=[1e-4, 1e-3, 1e-2])
print("objective (nats):", fit.objective.tolist())
print("test cross-entropy (nats):", fit.cross_entropy(test_x["layer2"], test_y).tolist())
weight, bias = fit.probe(fit.index("fine", 1e-3))  # [D, 100], [100]
