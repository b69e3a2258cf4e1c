"""A small, real Diffusion Transformer in PyTorch, written so that any rank of a Ulysses group can run
its share of a step.

What a request goes through (the same tasks paraflex schedules):

  encode   a tiny text encoder turns the request id into a pooled conditioning vector ``y``, and
           the initial latent noise is drawn from a generator seeded by the request id
  step s   one flow-matching Euler step: v = DiT(x_t, t, y); x <- x + (t_{s+1} - t_s) v, with
           t going from 1 (noise) to 0 over the request's steps
  decode   unpatchify the tokens and map them to pixels with a fixed transposed convolution

The DiT: patchified latent tokens (patch 2 over a latent of ``latent_channels`` at 1/8 of the
pixel size, so a 512x512 image is 32 x 32 = 1024 tokens, paraflex's ``latent_tokens``), fixed
sin-cos positions, a sinusoidal timestep embedding, ``depth`` blocks with adaLN modulation
(shift, scale, gate for attention and MLP), multi-head self-attention and a GELU MLP, and a
modulated final layer back to patches. Weights come from ``torch.manual_seed(config.seed)``:
every process builds bit-identical weights and nothing is downloaded.

Sequence parallelism is Ulysses: a rank holds a contiguous slice of the tokens and, around each
attention, a ``Comm`` swaps that for all tokens of a slice of the heads (``seq_to_heads``) and
back (``heads_to_seq``). Everything else in a block is per token, so the sharded forward computes
exactly what the whole-sequence forward computes; ``LocalComm`` is the degree-1 case and is what
``reference_generate`` uses. float32 throughout; torch.use_deterministic_algorithms is not needed
because no op here has a nondeterministic CPU kernel.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class DiTConfig:
    """Model sizes. The defaults run one step of a 512x512 request (1024 tokens) in tens of ms on
    one CPU core."""

    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    latent_channels: int = 4
    patch: int = 2
    vae_factor: int = 8  # pixels per latent cell (an 8x VAE: 16 pixels per token with patch 2)
    text_tokens: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "depth", "heads", "latent_channels", "patch", "vae_factor", "text_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DiTConfig: {name} must be > 0 (got {getattr(self, name)})")
        if self.hidden % self.heads != 0:
            raise ValueError(f"DiTConfig: hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig: mlp_ratio must be > 0 (got {self.mlp_ratio})")

    @property
    def pixels_per_token(self) -> int:
        return self.patch * self.vae_factor

    @property
    def token_dim(self) -> int:
        """Latent values per token (one patch of every latent channel)."""
        return self.patch * self.patch * self.latent_channels

    def allows_degree(self, degree: int) -> bool:
        """Ulysses splits the heads: a degree that does not divide them cannot run."""
        return degree >= 1 and self.heads % degree == 0

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        d = DiTConfig()
        p.add_argument("--hidden", type=int, default=d.hidden, help="model width (default %(default)s)")
        p.add_argument("--depth", type=int, default=d.depth, help="transformer blocks (default %(default)s)")
        p.add_argument("--heads", type=int, default=d.heads, help="attention heads; Ulysses degrees must divide it (default %(default)s)")
        p.add_argument("--mlp-ratio", type=float, default=d.mlp_ratio, help="MLP width / model width (default %(default)s)")
        p.add_argument("--model-seed", type=int, default=d.seed, help="seed of the weights (default %(default)s)")

    @staticmethod
    def from_args(a: argparse.Namespace) -> "DiTConfig":
        return DiTConfig(hidden=a.hidden, depth=a.depth, heads=a.heads, mlp_ratio=a.mlp_ratio, seed=a.model_seed)


@dataclass(frozen=True)
class Shape:
    """A request's generation shape, as paraflex's request_shape."""

    height: int
    width: int
    frames: int = 1
    model: str = "tiny-dit"

    def grid(self, cfg: DiTConfig) -> tuple[int, int, int]:
        """(latent frames, token rows, token columns). Integer division as paraflex's latent_tokens
        does (a 16-pixel token), never less than one token."""
        ppt = cfg.pixels_per_token
        lf = 1 if self.frames <= 1 else 1 + (self.frames - 1) // 4
        return lf, max(1, self.height // ppt), max(1, self.width // ppt)

    def tokens(self, cfg: DiTConfig) -> int:
        f, h, w = self.grid(cfg)
        return f * h * w


def request_seed(request_id: str) -> int:
    """A stable 63-bit seed from a request id (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(request_id.encode("utf-8")).digest()[:8], "little") >> 1


def shard_range(rank: int, ranks: int, total: int) -> tuple[int, int]:
    """(begin, count) of the slice rank `rank` of `ranks` holds: the same formula as paraflex's
    shard_range (collectives/migration_plan.hpp), sizes differ by at most one, larger slices last.
    Kept here so the model runs without the bindings; the executor checks it against them."""
    if ranks <= 0 or not 0 <= rank < ranks:
        raise ValueError(f"shard_range: rank {rank} of {ranks}")
    b = rank * total // ranks
    e = (rank + 1) * total // ranks
    return b, e - b


# --- communication interface used by the sharded forward -------------------------------------------


class Comm:
    """What a block needs from its Ulysses group. ``rank`` is this device's index in the group's
    layout (slice ``rank`` of the tokens, slice ``rank`` of the heads); ``degree`` its size."""

    rank: int = 0
    degree: int = 1

    def seq_to_heads(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        """x: [my tokens, groups, heads, d] -> [all tokens, groups, heads/degree, d]."""
        raise NotImplementedError

    def heads_to_seq(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        """x: [all tokens, heads/degree, d] -> [my tokens, heads, d]."""
        raise NotImplementedError


class LocalComm(Comm):
    """Degree 1: the whole sequence and every head are here."""

    def seq_to_heads(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        return x

    def heads_to_seq(self, x: torch.Tensor, token_counts: Sequence[int]) -> torch.Tensor:
        return x


# --- the model -------------------------------------------------------------------------------------


def _sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[n] float positions -> [n, dim] sin/cos features (dim even)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half, 1))
    a = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


def position_embedding(cfg: DiTConfig, shape: Shape, begin: int, count: int) -> torch.Tensor:
    """Fixed 3-axis sin-cos positions of tokens [begin, begin + count) in (frame, row, column) order.
    Computed from the global token index, so a shard gets exactly its rows of the full table."""
    f, h, w = shape.grid(cfg)
    idx = torch.arange(begin, begin + count)
    col, row, frame = idx % w, (idx // w) % h, idx // (w * h)
    d = cfg.hidden
    dc = (d // 3) // 2 * 2
    dr = dc
    df = d - dc - dr
    parts = [_sincos(col, dc), _sincos(row, dr)]
    if df > 0:
        parts.append(_sincos(frame, df - df % 2))
        if df % 2:
            parts.append(torch.zeros(count, 1))
    return torch.cat(parts, dim=1)


def timestep_features(t: float, dim: int = 256) -> torch.Tensor:
    return _sincos(torch.tensor([t * 1000.0]), dim)[0]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


# --- kernels ---------------------------------------------------------------------------------------
# Debian's python3-torch links the reference (netlib) BLAS: a dense 1024x128x384 GEMM takes ~25 ms on
# one core, oneDNN's (MKL-DNN) ~0.6 ms. On CPU the matrix products therefore go through oneDNN
# (torch._C._nn.mkldnn_linear); on CUDA, or with PARAFLEX_TORCH_KERNELS=dense, through the ordinary
# ops. Either way a row of a product depends only on that row's input, so a shard's rows are the
# same numbers as the whole sequence's rows.

_KERNELS = {"mode": None}


def use_mkldnn(t: torch.Tensor) -> bool:
    mode = _KERNELS["mode"]
    if mode is None:
        import os

        mode = os.environ.get("PARAFLEX_TORCH_KERNELS", "auto")
        if mode not in ("auto", "mkldnn", "dense"):
            raise ValueError(f"PARAFLEX_TORCH_KERNELS must be auto, mkldnn or dense (got {mode!r})")
        _KERNELS["mode"] = mode
    if mode == "dense" or t.device.type != "cpu" or t.dtype != torch.float32:
        return False
    return torch.backends.mkldnn.is_available()


class Linear(nn.Linear):
    """nn.Linear whose CPU product runs in oneDNN (weights converted once, on first use)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not use_mkldnn(x):
            return F.linear(x, self.weight, self.bias)
        mk = self.__dict__.get("_mk")
        if mk is None:
            mk = self.__dict__["_mk"] = (self.weight.to_mkldnn(), self.bias.to_mkldnn())
        lead = x.shape[:-1]
        y = torch._C._nn.mkldnn_linear(x.reshape(-1, x.shape[-1]).contiguous().to_mkldnn(), mk[0], mk[1]).to_dense()
        return y.reshape(*lead, y.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head; q, k, v: [T, heads, d] -> [T, heads, d]."""
    scale = q.shape[-1] ** -0.5
    if not use_mkldnn(q):
        qh, kh, vh = (t.transpose(0, 1) for t in (q, k, v))
        att = torch.softmax(torch.bmm(qh, kh.transpose(1, 2)) * scale, dim=-1)
        return torch.bmm(att, vh).transpose(0, 1).contiguous()
    lin = torch._C._nn.mkldnn_linear
    outs = []
    for h in range(q.shape[1]):  # the [T, T] scores stay in oneDNN's layout
        s = lin((q[:, h] * scale).contiguous().to_mkldnn(), k[:, h].contiguous().to_mkldnn(), None)
        outs.append(lin(torch.softmax(s, dim=-1), v[:, h].t().contiguous().to_mkldnn(), None).to_dense())
    return torch.stack(outs, dim=1)


class Block(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d = cfg.hidden
        self.heads = cfg.heads
        self.head_dim = d // cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = Linear(d, 3 * d)
        self.proj = Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hid = int(d * cfg.mlp_ratio)
        self.fc1 = Linear(d, hid)
        self.fc2 = Linear(hid, d)
        self.ada = nn.Linear(d, 6 * d)

    def forward(self, x: torch.Tensor, c: torch.Tensor, comm: Comm, token_counts: Sequence[int]) -> torch.Tensor:
        """x: [my tokens, hidden]; c: [hidden] conditioning (the same on every rank)."""
        n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6)
        h = modulate(self.norm1(x), sh1, sc1)
        qkv = self.qkv(h).view(n, 3, self.heads, self.head_dim)
        qkv = comm.seq_to_heads(qkv, token_counts)  # [T, 3, heads/k, hd]
        o = attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # [T, heads/k, hd]
        o = comm.heads_to_seq(o, token_counts).reshape(n, d)
        x = x + g1 * self.proj(o)
        x = x + g2 * self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), sh2, sc2))))
        return x

    def forward_batch(self, x: torch.Tensor, c: torch.Tensor, comm: Comm, token_counts: Sequence[int]) -> torch.Tensor:
        """A batch of b requests of one shape: x [b, my tokens, hidden], c [b, hidden] (each member its
        own conditioning). The per-token layers run once over all b*n rows; attention stays per member
        (each attends only to its own tokens). One seq_to_heads / heads_to_seq exchange for the whole
        batch: the members ride in the "groups" dimension, so a batch costs one collective, not b."""
        b, n, d = x.shape
        hk_all, hd = self.heads, self.head_dim
        sh1, sc1, g1, sh2, sc2, g2 = (m[:, None, :] for m in self.ada(F.silu(c)).chunk(6, dim=-1))
        h = modulate(self.norm1(x), sh1, sc1)
        qkv = self.qkv(h).view(b, n, 3, hk_all, hd).permute(1, 0, 2, 3, 4).reshape(n, b * 3, hk_all, hd)
        qkv = comm.seq_to_heads(qkv, token_counts)  # [T, b*3, heads/k, hd]
        total, hk = qkv.shape[0], qkv.shape[2]
        qkv = qkv.view(total, b, 3, hk, hd)
        o = torch.stack([attention(qkv[:, i, 0], qkv[:, i, 1], qkv[:, i, 2]) for i in range(b)], dim=1)  # [T, b, hk, hd]
        o = comm.heads_to_seq(o.reshape(total, b * hk, hd), token_counts)  # [n, k * b * hk, hd], rank-major
        k = o.shape[1] // (b * hk)
        o = o.view(n, k, b, hk, hd).permute(2, 0, 1, 3, 4).reshape(b, n, d)  # heads back in rank order per member
        x = x + g1 * self.proj(o)
        x = x + g2 * self.fc2(F.gelu(self.fc1(modulate(self.norm2(x), sh2, sc2))))
        return x


class TinyDiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        torch.manual_seed(cfg.seed)
        # text encoder: byte embeddings + positions -> 2-layer MLP -> mean pool -> projection
        self.tok_emb = nn.Embedding(256, d)
        self.txt_pos = nn.Parameter(torch.randn(cfg.text_tokens, d) * 0.02)
        self.txt1 = nn.Linear(d, 2 * d)
        self.txt2 = nn.Linear(2 * d, d)
        self.txt_out = nn.Linear(d, d)
        # DiT
        self.x_emb = Linear(cfg.token_dim, d)
        self.t1 = nn.Linear(256, d)
        self.t2 = nn.Linear(d, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.out = Linear(d, cfg.token_dim)
        # "VAE" decoder: a fixed transposed convolution, latent cell -> vae_factor^2 pixels
        self.decoder = nn.ConvTranspose2d(cfg.latent_channels, 3, kernel_size=cfg.vae_factor, stride=cfg.vae_factor)
        with torch.no_grad():  # random, not zero, gates: every block changes the result
            for b in self.blocks:
                b.ada.weight.mul_(0.5)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    # encode -------------------------------------------------------------------------------------
    def encode_text(self, request_id: str) -> torch.Tensor:
        """The pooled conditioning vector of a request: [hidden]."""
        raw = request_id.encode("utf-8")[: self.cfg.text_tokens]
        ids = torch.zeros(self.cfg.text_tokens, dtype=torch.long)
        if raw:
            ids[: len(raw)] = torch.tensor(list(raw), dtype=torch.long)
        h = self.tok_emb(ids.to(self.txt_pos.device)) + self.txt_pos
        h = h + self.txt2(F.gelu(self.txt1(h)))
        return self.txt_out(h.mean(dim=0))

    def initial_noise(self, request_id: str, shape: Shape) -> torch.Tensor:
        """The whole initial latent, patchified: [tokens, token_dim], from the request's seed."""
        f, h, w = shape.grid(self.cfg)
        p, c = self.cfg.patch, self.cfg.latent_channels
        g = torch.Generator().manual_seed(request_seed(request_id))
        lat = torch.randn(f, c, h * p, w * p, generator=g, dtype=torch.float32)
        return patchify(lat, p)

    # step ---------------------------------------------------------------------------------------
    def velocity(self, x: torch.Tensor, t: float, y: torch.Tensor, shape: Shape, begin: int, comm: Comm,
                 token_counts: Sequence[int]) -> torch.Tensor:
        """v for this rank's tokens [begin, begin + len(x)); token_counts: every rank's count."""
        c = self.t2(F.silu(self.t1(timestep_features(t).to(x.device)))) + y
        hdn = self.x_emb(x) + position_embedding(self.cfg, shape, begin, x.shape[0]).to(x.device)
        for b in self.blocks:
            hdn = b(hdn, c, comm, token_counts)
        sh, sc = self.ada_out(F.silu(c)).chunk(2)
        return self.out(modulate(self.norm_out(hdn), sh, sc))

    def euler_step(self, x: torch.Tensor, step: int, steps: int, y: torch.Tensor, shape: Shape, begin: int,
                   comm: Comm, token_counts: Sequence[int]) -> torch.Tensor:
        t0, t1 = sampler_times(step, steps)
        return x + (t1 - t0) * self.velocity(x, t0, y, shape, begin, comm, token_counts)

    def velocity_batch(self, xs: torch.Tensor, ts: Sequence[float], ys: torch.Tensor, shape: Shape, begin: int, comm: Comm,
                       token_counts: Sequence[int]) -> torch.Tensor:
        """velocity for b requests of one shape in one forward: xs [b, my tokens, token_dim], ts their
        times (members may be at different steps), ys [b, hidden] -> [b, my tokens, token_dim]."""
        tf = torch.stack([timestep_features(t) for t in ts]).to(xs.device)
        c = self.t2(F.silu(self.t1(tf))) + ys
        hdn = self.x_emb(xs) + position_embedding(self.cfg, shape, begin, xs.shape[1]).to(xs.device)[None]
        for b in self.blocks:
            hdn = b.forward_batch(hdn, c, comm, token_counts)
        sh, sc = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        return self.out(modulate(self.norm_out(hdn), sh[:, None, :], sc[:, None, :]))

    def euler_step_batch(self, xs: torch.Tensor, steps_at: Sequence[tuple[int, int]], ys: torch.Tensor, shape: Shape, begin: int,
                         comm: Comm, token_counts: Sequence[int]) -> torch.Tensor:
        """One Euler step of each member: steps_at[i] = (step, steps) of member i; xs [b, n, token_dim]."""
        times = [sampler_times(s, n) for s, n in steps_at]
        v = self.velocity_batch(xs, [t0 for t0, _ in times], ys, shape, begin, comm, token_counts)
        dt = torch.tensor([t1 - t0 for t0, t1 in times], dtype=xs.dtype, device=xs.device)
        return xs + dt[:, None, None] * v

    # decode -------------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor, shape: Shape) -> torch.Tensor:
        """All tokens [T, token_dim] -> pixels [latent frames, 3, H', W'] in [-1, 1] (grid(): H', W'
        rounded down to whole tokens; no temporal upsampling)."""
        f, h, w = shape.grid(self.cfg)
        lat = unpatchify(tokens, f, h, w, self.cfg.patch, self.cfg.latent_channels)
        return torch.tanh(self.decoder(lat))


def sampler_times(step: int, steps: int) -> tuple[float, float]:
    """Flow matching from t = 1 (noise) to t = 0 in `steps` uniform Euler steps."""
    if steps <= 0 or not 0 <= step < steps:
        raise ValueError(f"sampler step {step} of {steps}")
    return 1.0 - step / steps, 1.0 - (step + 1) / steps


def patchify(lat: torch.Tensor, p: int) -> torch.Tensor:
    """[F, C, h*p, w*p] -> [F*h*w, p*p*C], tokens in (frame, row, column) order."""
    f, c, hp, wp = lat.shape
    h, w = hp // p, wp // p
    return lat.reshape(f, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(f * h * w, p * p * c).contiguous()


def unpatchify(tokens: torch.Tensor, f: int, h: int, w: int, p: int, c: int) -> torch.Tensor:
    return tokens.reshape(f, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(f, c, h * p, w * p).contiguous()


_MODELS: dict = {}


def model_for(cfg: DiTConfig) -> TinyDiT:
    """One model per configuration per process (weights are a pure function of the config)."""
    m = _MODELS.get(cfg)
    if m is None:
        m = _MODELS[cfg] = TinyDiT(cfg)
    return m


@torch.no_grad()
def reference_generate(cfg: DiTConfig, request_id: str, shape: Shape, steps: int) -> torch.Tensor:
    """The whole request in one process at degree 1: what every parallel schedule must reproduce."""
    m = model_for(cfg)
    y = m.encode_text(request_id)
    x = m.initial_noise(request_id, shape)
    comm = LocalComm()
    for s in range(steps):
        x = m.euler_step(x, s, steps, y, shape, 0, comm, [x.shape[0]])
    return m.decode(x, shape)


def _main() -> None:
    p = argparse.ArgumentParser(description="Time one step of the tiny DiT at degree 1 on this CPU.")
    DiTConfig.add_arguments(p)
    p.add_argument("--size", type=int, default=512, help="image height = width in pixels (default %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    from .worker import tune_malloc  # here, not at the top: worker imports this module

    tune_malloc()  # as the workers do: with glibc's default a step is several times slower
    torch.set_num_threads(a.threads)
    cfg = DiTConfig.from_args(a)
    m = model_for(cfg)
    shape = Shape(a.size, a.size)
    with torch.no_grad():
        y = m.encode_text("bench")
        x = m.initial_noise("bench", shape)
        m.euler_step(x, 0, 8, y, shape, 0, LocalComm(), [x.shape[0]])
        t0 = time.perf_counter()
        for _ in range(a.repeat):
            x = m.euler_step(x, 0, 8, y, shape, 0, LocalComm(), [x.shape[0]])
        dt = (time.perf_counter() - t0) / a.repeat
    print(f"tokens={shape.tokens(cfg)} hidden={cfg.hidden} depth={cfg.depth} heads={cfg.heads} step_ms={dt * 1e3:.1f}")


if __name__ == "__main__":
    _main()
