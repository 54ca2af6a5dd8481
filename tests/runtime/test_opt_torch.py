"""Adam and AdamW of the CPU back end against torch.optim.Adam/AdamW on the
same weights, gradients and per-update rates: 5 updates of 1003 weights
(test_opt_update --dump prints our run), within 1e-6 relative. Skipped (77)
where PyTorch is not importable: this file has nothing else to check."""
import json
import os
import subprocess
import sys

try:
    import torch
except ImportError:
    print("skip: torch is not importable")
    sys.exit(77)

exe = sys.argv[1]
failures = 0
for kind in ("adam", "adamw"):
    p = subprocess.run([exe, "--dump", kind], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        print(f"FAIL: {kind}: --dump rc {p.returncode}: {p.stderr.strip()}", file=sys.stderr)
        failures += 1
        continue
    r = json.loads(p.stdout)
    w = torch.tensor(r["p0"], dtype=torch.float32, requires_grad=True)
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    opt = cls([w], lr=r["lr"][0], betas=(r["beta1"], r["beta2"]), eps=r["eps"],
              weight_decay=r["wd"])
    for lr, g in zip(r["lr"], r["g"]):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    ref = w.detach().double()
    got = torch.tensor(r["p"], dtype=torch.float64)
    if not torch.isfinite(got).all():
        print(f"FAIL: {kind}: non-finite weights", file=sys.stderr)
        failures += 1
        continue
    rel = ((got - ref).abs() / ref.abs().clamp_min(1e-30))
    i = int(rel.argmax())
    print(f"{kind}: torch {torch.__version__}: max relative difference {float(rel[i]):.3g} at {i}")
    if float(rel[i]) > 1e-6:
        print(f"FAIL: {kind}: weight {i}: ours {float(got[i])!r}, torch {float(ref[i])!r}",
              file=sys.stderr)
        failures += 1
sys.exit(1 if failures else 0)
