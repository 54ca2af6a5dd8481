"""The alpha-beta model of scaling.py: allreduce time for the flat ring, the
hierarchical allreduce, 16-bit wire compression and local accumulation, the
step time built on it, and the projection to GPU clusters.

Units: bytes, bits per second, seconds. S = gradient bytes, n = ranks,
H = hosts, R = ranks per host, BW = one link's rate, alpha = one hop's latency.
    flat ring:  t_ring(S, n) = 2(n-1)/n * S/BW + 2(n-1) * alpha
    hier:       t_local(R) + R rings of S/R bytes over H hosts, sharing the
                host's link (BW/R each) + the share-back (inside t_local):
                t_hier = t_local(R) + 2(H-1)/H * S/BW + 2(H-1) * alpha
    16-bit:     the bytes on the (inter-node) ring are S/2; add the codec's
                CPU time: every element a rank sends is encoded once and every
                element it receives decoded once, 2(n-1)/n of the gradient
                (hier: 2(H-1)/H of its slice S/R)
    K:          one allreduce per K micro-batches:
                t per micro-batch = t_c + t_allreduce / K
    tbf credit: the simulated links are token buckets (launcher/netns/simhosts:
                burst b = max(1 ms of traffic, 256 KiB)). While a rank computes,
                its link's bucket refills, and the next allreduce's first
                min(b, BW * K * t_c) bytes leave at once: the allreduce is that
                much shorter than the back-to-back probe that beta comes from
                (where the bucket never refills)."""

import os


def layer_bytes(h1=300, h2=100):
    dims = [784, h1, h2, 10]
    return [4 * (dims[k] * dims[k + 1] + dims[k + 1]) for k in range(3)]


def hidden_fraction(h1=300, h2=100):
    """Share of a step's FLOPs in the first layer's weight gradient: the
    backward work that runs after the two small layers' gradients are ready."""
    fwd = 2 * (784 * h1 + h1 * h2 + h2 * 10)
    bwd = fwd + 2 * (h1 * h2 + h2 * 10)   # dW for all, dX for layers 2 and 3
    return 2 * 784 * h1 / (fwd + bwd)


def t_ring(nbytes, n, bw_bits, alpha_s):
    if n < 2:
        return 0.0
    return 2.0 * (n - 1) / n * nbytes * 8.0 / bw_bits + 2.0 * (n - 1) * alpha_s


def wire_bytes(nbytes, compression):
    return nbytes if compression == "none" else nbytes / 2.0


def t_allreduce(nbytes, v, hosts, per_host, bw_bits, alpha_s, t_local_full=0.0, codec_full=0.0,
                full_bytes=None):
    """One allreduce of nbytes for variant v = {"allreduce", "compression"}.
    t_local_full: the measured node-local (shm) allreduce of the whole gradient
    (full_bytes) on per_host ranks, scaled to nbytes; codec_full: the measured
    encode + decode time of the whole gradient (0 without compression)."""
    full = full_bytes or nbytes
    share = nbytes / full
    codec = 0.0 if v["compression"] == "none" else codec_full * share
    w = wire_bytes(nbytes, v["compression"])
    if v["allreduce"] == "hier":
        local = t_local_full * share if per_host > 1 else 0.0
        if hosts < 2:
            return local
        # per_host rings at once, each on its slice w/R at BW/R: the host sends w once.
        inter = t_ring(w / per_host, hosts, bw_bits / per_host, alpha_s)
        return local + inter + 2.0 * (hosts - 1) / hosts * codec / per_host
    n = hosts * per_host
    return t_ring(w, n, bw_bits, alpha_s) + (2.0 * (n - 1) / n * codec if n > 1 else 0.0)


def t_step_model(tc_s, n, bw_bits, alpha_s, overlap, sizes=None, f=None, ar=None, k=1):
    """Time per micro-batch (n ranks x B samples). ar(nbytes) is the allreduce
    time of nbytes (default: the flat ring on n ranks). Overlap on: each
    layer's gradient is reduced when its backward ends; the first layer's (94%
    of the bytes) is ready last, so only the two small layers can hide behind
    its weight-gradient GEMM, a fraction f of the step. With K micro-batches
    per allreduce, only the K-th overlaps, and the communication is paid once
    per K."""
    sizes = sizes or layer_bytes()
    f = hidden_fraction() if f is None else f
    if ar is None:
        def ar(nb):
            return t_ring(nb, n, bw_bits, alpha_s)
    if not overlap:
        comm = ar(sum(sizes))
    else:
        comm = ar(sizes[0]) + max(0.0, ar(sizes[1]) + ar(sizes[2]) - f * tc_s)
    return tc_s + comm / k


# Where ranks outnumber the cores, the model's t_c (n single-rank processes
# at once) does not carry what the job adds on the same cores.
OVERSUBSCRIBED = (
    "ranks > cores: t_c(n) is n single-rank processes computing at once for the whole run; in "
    "the job the ranks compute only between allreduces, and a rank whose ring steps end early "
    "computes while the others still wait on the link, so where the link dominates the job's "
    "compute phase is shorter than t_c(n) (the model over-predicts the step); the progress "
    "threads, the simulated links' TCP/softirq work and the yielding waits in MPI take the same "
    "cores (the model under-predicts); which wins differs from row to row, so these rows are "
    "not held to 15%")


def rate_bits(rate):
    return float(rate[:-4]) * (1e9 if rate.endswith("gbit") else 1e6)


def link_bits(p, nbytes):
    """The link's effective rate (beta) from the probe's 2-rank ring allreduce
    across two hosts, which moves exactly nbytes each way: what TCP, the tbf
    shaper and the ring's own steps make of the nominal rate."""
    t = p["allreduce_ms"] / 1e3 - 2.0 * p["alpha_us"] / 1e6
    return nbytes * 8.0 / t


def row_model(res, rate, n, hosts, per_host, v, ov, B):
    """The model's time per micro-batch round (n ranks x B samples) for one
    row, its allreduce time of the whole gradient, t_c and the probe used.
    The link's rate is beta as measured by the 2-rank link probe where the
    sweep has one (res["rates"][rate]["link"]), else the nominal tbf rate."""
    rr = res["rates"][rate]
    p = rr["probe"][n] if n in rr["probe"] else rr["probe"][str(n)]
    alpha = p["alpha_us"] / 1e6
    S = sum(layer_bytes())
    bw = link_bits(rr["link"], S) if rr.get("link") else rate_bits(rate)
    if v["compression"] != "none" and rr.get("link16"):  # beta at the row's own wire size
        bw = link_bits(rr["link16"], S / 2)
    loc = res.get("local", {}).get(str(per_host))
    t_local = loc["allreduce_ms"] / 1e3 if loc else 0.0
    codec = p.get("codec_%s_ms" % v["compression"], 0.0) / 1e3

    def ar(nb):
        return t_allreduce(nb, v, hosts, per_host, bw, alpha, t_local, codec, S)
    tc = res["tc_s"][n] if n in res["tc_s"] else res["tc_s"][str(n)]
    t = t_step_model(tc, n, bw, alpha, ov == "on", ar=ar, k=v["k"])
    if hosts > 1:
        t = max(tc + t_ring(0, hosts, bw, alpha) / v["k"], t - tbf_credit_s(rate, v["k"] * tc) / v["k"])
    return t, ar(S), tc, p


def tbf_credit_s(rate, idle_s):
    """The time a link's token bucket saves the next allreduce after idle_s of
    compute: the bytes it refilled (at most its burst, as simhosts sets it)
    pass at once instead of at the link's rate."""
    bits = rate_bits(rate)
    burst = max(bits / 8.0 / 1000.0, 262144.0)
    return min(burst, bits / 8.0 * idle_s) * 8.0 / bits


def fit_label(n, t_meas, t_mod):
    if n > (os.cpu_count() or 1):
        return "n>cores"
    dev = t_mod / t_meas - 1
    return "%+.0f%% %s" % (100 * dev, "ok" if abs(dev) <= 0.15 else "OFF")


# ------------------------------------------------------------ the projection

# The GPU step: the fused batch-50 step on one H200, 45.3 us in a CUDA graph
# (benchmarks/gpu/README.md, "Fused step, final run": bash benchmarks/gpu/check.sh).
GPU_STEP_MS = 0.0453
# Published NCCL figures for ~1 MB on 8 GPUs in one NVLink node, and the
# small-message floor (sources and caveats: benchmarks/scaling/README.md).
NCCL_8GPU_1MB_US = 24.0        # plain (ring/LL), 23-25 us
NCCL_8GPU_1MB_NVLS_US = 15.0   # NVLink multicast (NVLS), 14-16 us
NCCL_8GPU_8B_SYMM_US = 2.3     # 8 B, symmetric memory, NCCL 2.27, 8xH200
NCCL_2NODE_1MB_US = 122.0      # 1 MB across two NDR (400G) nodes
NCCL_40GPU_RING_1MB_US = 354.9  # 1 MiB, NCCL_ALGO=Ring, 5 nodes x 8 H100, 4x400G RoCE (nccl issue 1368)
ALPHA_IB_US = 5.0              # ASSUMED: one InfiniBand hop
ALPHA_NVLINK_US = 2.0          # ASSUMED: one NVLink hop
GPUS_PER_NODE = 8
PROJ_RANKS = (8, 64, 256)
IB = (("IB 100G", 100e9), ("IB 400G", 400e9))
NVLINK_BITS = 3600e9           # NVLink4, 450 GB/s per GPU and direction


def proj_options(alpha_ib_s, local_s):
    """(label, t_allreduce(n GPUs, link bits), K) for the options of the table.
    hier: NCCL inside the node (the published 1 MB figure, local_s) + one ring
    per local GPU across the nodes on its 1/8 slice, each GPU on its own NIC
    (DGX-style rails), so each ring has the NIC's full rate."""
    S = float(sum(layer_bytes()))
    g = GPUS_PER_NODE

    def flat(n, bw, comp="none"):
        return t_ring(wire_bytes(S, comp), n, bw, alpha_ib_s)

    def hier(n, bw, comp="none"):
        nodes = max(1, n // g)
        return local_s + t_ring(wire_bytes(S, comp) / g, nodes, bw, alpha_ib_s)
    return [("flat ring (tfdist ring/MPI, every hop IB)", flat, 1),
            ("flat ring + bf16", lambda n, bw: flat(n, bw, "bf16"), 1),
            ("hier (NCCL in node + ring across)", hier, 1),
            ("hier + bf16", lambda n, bw: hier(n, bw, "bf16"), 1),
            ("hier + bf16, K=4", lambda n, bw: hier(n, bw, "bf16"), 4),
            ("hier, K=4", hier, 4)]


# The options repeated with NVLS in the node and with the calibrated alpha.
SHORT = ("hier (NCCL in node + ring across)", "hier + bf16, K=4")


def efficiency(t_gpu, t_ar, k):
    """K micro-batches of t_gpu, then one allreduce: no overlap."""
    return k * t_gpu / (k * t_gpu + t_ar)


def projection_lines(gpu_step_ms, measured, alpha_ib_us, alpha_nvlink_us):
    t_gpu = gpu_step_ms / 1e3
    a_ib = alpha_ib_us / 1e6
    S = sum(layer_bytes())
    src = ("measured: fused step, H200, benchmarks/gpu/README.md" if measured
           else "given with --gpu-step-ms")
    out = ["# Projection: allreduce of %d bytes per step, GPU step %.1f us (%s); no overlap;"
           % (S, 1e3 * gpu_step_ms, src),
           "# efficiency = K*t_gpu / (K*t_gpu + t_allreduce); hier uses NCCL's published 1 MB "
           "8-GPU time (%.0f us plain, %.0f us NVLS) in the node," % (NCCL_8GPU_1MB_US,
                                                                     NCCL_8GPU_1MB_NVLS_US),
           "# one NIC per GPU (8 per node), alpha IB %.1f us per hop (assumed). "
           "Cells: efficiency (allreduce us)." % alpha_ib_us]
    hdr = "%-44s %-8s" % ("option", "network") + "".join("%18s" % ("%d GPUs" % n)
                                                        for n in PROJ_RANKS)
    out.append(hdr)
    for local_us, tag in ((NCCL_8GPU_1MB_US, ""), (NCCL_8GPU_1MB_NVLS_US, " [NVLS]")):
        for label, fn, k in proj_options(a_ib, local_us / 1e6):
            if tag and label not in SHORT:
                continue
            for net, bw in IB:
                row = "%-44s %-8s" % (label + tag, net)
                for n in PROJ_RANKS:
                    t = fn(n, bw)
                    row += "%18s" % ("%5.1f%% (%6.1f)" % (100 * efficiency(t_gpu, t, k), 1e6 * t))
                out.append(row)
    # One NVLink domain: 8 GPUs as published; beyond, the ring model (an
    # NVL72-class domain reaches 72 GPUs; 256 assumes a larger one).
    a_nv = alpha_nvlink_us / 1e6
    for label, k in (("one NVLink domain (8: published; ring model)", 1),
                     ("one NVLink domain, K=4", 4)):
        row = "%-44s %-8s" % (label, "NVLink4")
        for n in PROJ_RANKS:
            t = NCCL_8GPU_1MB_US / 1e6 if n == GPUS_PER_NODE else t_ring(S, n, NVLINK_BITS, a_nv)
            row += "%18s" % ("%5.1f%% (%6.1f)" % (100 * efficiency(t_gpu, t, k), 1e6 * t))
        out.append(row)
    # The anchors: what the model says where a published figure exists.
    m8 = t_ring(S, 8, NVLINK_BITS, a_nv)
    m16 = NCCL_8GPU_1MB_US / 1e6 + t_ring(S / 8.0, 2, 400e9, a_ib)
    m16f = t_ring(S, 16, 400e9, a_ib)
    out.append("# anchors: 8 GPUs on NVLink, ring model %.1f us against %.0f us published (plain); "
               "2 NDR nodes x 8: hier model %.1f us, flat ring model %.1f us, against %.0f us "
               "published; 8 B floor with symmetric memory %.1f us (model: 14 hops x %.1f us = %.0f us)"
               % (1e6 * m8, NCCL_8GPU_1MB_US, 1e6 * m16, 1e6 * m16f, NCCL_2NODE_1MB_US,
                  NCCL_8GPU_8B_SYMM_US, alpha_nvlink_us, 14 * alpha_nvlink_us))
    # An alpha that makes hier meet the 2-node figure: the table's IB rows
    # with it bound the projection from the pessimistic side.
    a_cal = (NCCL_2NODE_1MB_US / 1e6 - NCCL_8GPU_1MB_US / 1e6 - t_ring(S / 8.0, 2, 400e9, 0.0)) / 2
    out.append("# 40 GPUs (5 nodes x 8, 400G), NCCL ring, 1 MiB: %.1f us published; flat ring model "
               "(alpha %.1f us) %.1f us; hier model %.1f us, with the calibrated alpha %.1f us"
               % (NCCL_40GPU_RING_1MB_US, alpha_ib_us, 1e6 * t_ring(S, 40, 400e9, a_ib),
                  1e6 * (NCCL_8GPU_1MB_US / 1e6 + t_ring(S / 8.0, 5, 400e9, a_ib)),
                  1e6 * (NCCL_8GPU_1MB_US / 1e6 + t_ring(S / 8.0, 5, 400e9, a_cal))))
    out.append("# calibrated to the 2-node figure, alpha IB = %.1f us; hier with it:" % (1e6 * a_cal))
    for label, fn, k in proj_options(a_cal, NCCL_8GPU_1MB_US / 1e6):
        if label not in SHORT:
            continue
        for net, bw in IB:
            row = "%-44s %-8s" % (label + " [cal]", net)
            for n in PROJ_RANKS:
                t = fn(n, bw)
                row += "%18s" % ("%5.1f%% (%6.1f)" % (100 * efficiency(t_gpu, t, k), 1e6 * t))
            out.append(row)
    return out
