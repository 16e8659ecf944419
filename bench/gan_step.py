#!/usr/bin/env python3
"""PyTorch twin of histofed's tch GAN layer (src/models/), for timing and checkpoint-compatibility checks.

Why this exists: the Rust model layer claims (a) its per-step cost matches PyTorch's for the same architecture and
thread count (both call the same libtorch kernels), and (b) its checkpoints load in PyTorch. This script rebuilds the
same networks under the same parameter names and the same training step, so both claims can be measured here.

Usage:
  OMP_WAIT_POLICY=PASSIVE python bench/gan_step.py --preset small --batch 32 --steps 10 --threads 2 [--gan cgan --disc cnn]
  python bench/gan_step.py ... --device cuda   # on the GPU (scripts/gpu_check.sh)
  python bench/gan_step.py ... --json    # one JSON object per combination (read by `histofed bench models`)
  python bench/gan_step.py --check DIR   # DIR from the Rust test `models::bench::tests::export_parity_fixture`
Only torch is needed (safetensors files are parsed by hand). `scripts/bench_venv.sh` creates a venv with it.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Mirrors ModelConfig::preset in src/models/config.rs.
PRESETS = {
    #        size latent g_w d_w patch dim depth heads
    "tiny": (32, 32, 16, 16, 8, 32, 2, 2),
    "small": (64, 64, 32, 32, 8, 128, 4, 4),
    "paper": (128, 128, 64, 64, 16, 768, 12, 12),
}


def preset(name, gan, disc, num_classes=4):
    size, latent, gw, dw, patch, dim, depth, heads = PRESETS[name]
    if gan == "wgan-gp":
        lr_g, lr_d, b1, b2, n_critic = 1e-4, 1e-4, 0.0, 0.9, 5
    else:
        lr_g, lr_d, b1, b2, n_critic = 2e-4, 2e-4, 0.5, 0.999, 1
    if name == "tiny":
        n_critic = min(n_critic, 2)
    if disc == "vit":
        lr_d *= 0.5
    return dict(gan=gan, discriminator=disc, image_size=size, num_classes=num_classes, latent_dim=latent,
                g_width=gw, d_width=dw, vit_patch=patch, vit_dim=dim, vit_depth=depth, vit_heads=heads,
                lr_g=lr_g, lr_d=lr_d, beta1=b1, beta2=b2, n_critic=n_critic, gp_lambda=10.0, spectral_norm=False)


def num_stages(size):
    n, s = 0, 4
    while s < size:
        s, n = s * 2, n + 1
    return n


class UpBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Generator(nn.Module):
    def __init__(self, c):
        super().__init__()
        st = num_stages(c["image_size"])
        ch = lambda i: c["g_width"] * (1 << min(st - 1 - i, 3))
        self.c0 = ch(0)
        self.label_emb = nn.Embedding(c["num_classes"], c["latent_dim"])
        self.fc = nn.Linear(c["latent_dim"], self.c0 * 16, bias=False)
        self.fc_bn = nn.BatchNorm2d(self.c0)
        self.blocks = nn.ModuleList([UpBlock(ch(i), ch(i + 1)) for i in range(st - 1)])
        self.out = nn.ConvTranspose2d(ch(st - 1), 3, 4, 2, 1, bias=True)

    def forward(self, z, y):
        h = self.fc(z * self.label_emb(y)).view(-1, self.c0, 4, 4)
        h = F.relu(self.fc_bn(h))
        for b in self.blocks:
            h = b(h)
        return torch.tanh(self.out(h))


def lrelu(x):
    return torch.maximum(x, x * 0.2)


class DownBlock(nn.Module):
    def __init__(self, cin, cout, norm, sn):
        super().__init__()
        conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=norm is None)
        self.conv = nn.utils.spectral_norm(conv) if sn else conv
        if norm == "batch":
            self.norm = nn.BatchNorm2d(cout)
        elif norm == "layer":
            self.norm = nn.GroupNorm(1, cout)
        else:
            self.norm = nn.Identity()

    def forward(self, x):
        return lrelu(self.norm(self.conv(x)))


class CnnBackbone(nn.Module):
    def __init__(self, c):
        super().__init__()
        st = num_stages(c["image_size"])
        ch = lambda i: c["d_width"] * (1 << min(i, 3))
        blocks = []
        for i in range(st):
            norm = None if (i == 0 or c["spectral_norm"]) else ("layer" if c["gan"] == "wgan-gp" else "batch")
            blocks.append(DownBlock(3 if i == 0 else ch(i - 1), ch(i), norm, c["spectral_norm"]))
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = ch(st - 1)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x.sum(dim=(2, 3))


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (1.0 / math.sqrt(hd))).softmax(-1)  # written out, as in vit.rs
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)


class VitEncoder(nn.Module):
    def __init__(self, size, patch, dim, depth, heads, ratio=4):
        super().__init__()
        n = (size // patch) ** 2
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_dim = dim

    def forward(self, x):
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1) + self.pos_embed
        for b in self.blocks:
            h = b(h)
        return self.norm(h[:, 0])


class Discriminator(nn.Module):
    """Backbone modules are registered at the top level (no `backbone.` prefix), as in discriminator.rs."""

    def __init__(self, c):
        super().__init__()
        if c["discriminator"] == "cnn":
            bb = CnnBackbone(c)
            self.blocks = bb.blocks
            self._cnn = True
        else:
            bb = VitEncoder(c["image_size"], c["vit_patch"], c["vit_dim"], c["vit_depth"], c["vit_heads"])
            self.patch_embed, self.cls_token, self.pos_embed = bb.patch_embed, bb.cls_token, bb.pos_embed
            self.blocks, self.norm = bb.blocks, bb.norm
            self._cnn = False
        feat = bb.out_dim
        sn = c["spectral_norm"] and self._cnn
        wrap = (lambda m: nn.utils.spectral_norm(m)) if sn else (lambda m: m)
        self.head = wrap(nn.Linear(feat, 1))
        self.acgan = c["gan"] == "acgan"
        if self.acgan:
            self.aux = wrap(nn.Linear(feat, c["num_classes"]))
        else:
            self.class_emb = nn.Embedding(c["num_classes"], feat)

    def features(self, x):
        if self._cnn:
            for b in self.blocks:
                x = b(x)
            return x.sum(dim=(2, 3))
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1) + self.pos_embed
        for b in self.blocks:
            h = b(h)
        return self.norm(h[:, 0])

    def forward(self, x, y):
        h = self.features(x)
        src = self.head(h).squeeze(1)
        if self.acgan:
            return src, self.aux(h)
        return src + (self.class_emb(y) * h).sum(1), None


def init_weights(model):
    """The rule of src/models/init.rs (values differ: it draws from its own generator)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif leaf == "weight" and p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith("label_emb.weight"):
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 0.02)


class Gan:
    def __init__(self, c, seed=0):
        torch.manual_seed(seed)
        self.c = c
        self.g, self.d = Generator(c), Discriminator(c)
        init_weights(self.g)
        init_weights(self.d)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=c["lr_g"], betas=(c["beta1"], c["beta2"]))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=c["lr_d"], betas=(c["beta1"], c["beta2"]))

    def _update(self, opt, loss):
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    def _d_for_g(self, fake, y):
        self.d.requires_grad_(False)
        out = self.d(fake, y)
        self.d.requires_grad_(True)
        return out

    def gradient_penalty(self, real, fake, y, alpha):
        a = alpha.view(-1, 1, 1, 1)
        x = (real.detach() * a + fake.detach() * (1 - a)).requires_grad_(True)
        s, _ = self.d(x, y)
        (g,) = torch.autograd.grad(s.sum(), x, create_graph=True)
        norm = (g.flatten(1).square().sum(1) + 1e-12).sqrt()
        return (norm - 1).square().mean() * self.c["gp_lambda"]

    def train_step(self, real, y):
        c, b = self.c, real.shape[0]
        bce = F.binary_cross_entropy_with_logits
        if c["gan"] == "cgan":
            fake = self.g(torch.randn(b, c["latent_dim"]), y)
            dr, _ = self.d(real, y)
            df, _ = self.d(fake.detach(), y)
            d_loss = bce(dr, torch.ones_like(dr)) + bce(df, torch.zeros_like(df))
            self._update(self.opt_d, d_loss)
            go, _ = self._d_for_g(fake, y)
            g_loss = bce(go, torch.ones_like(go))
            self._update(self.opt_g, g_loss)
        elif c["gan"] == "wgan-gp":
            for _ in range(c["n_critic"]):
                with torch.no_grad():
                    fake = self.g(torch.randn(b, c["latent_dim"]), y)
                alpha = torch.rand(b)
                dr, _ = self.d(real, y)
                df, _ = self.d(fake, y)
                d_loss = df.mean() - dr.mean() + self.gradient_penalty(real, fake, y, alpha)
                self._update(self.opt_d, d_loss)
            fake = self.g(torch.randn(b, c["latent_dim"]), y)
            g_loss = -self._d_for_g(fake, y)[0].mean()
            self._update(self.opt_g, g_loss)
        else:
            fake = self.g(torch.randn(b, c["latent_dim"]), y)
            sr, cr = self.d(real, y)
            sf, cf = self.d(fake.detach(), y)
            d_loss = (bce(sr, torch.ones_like(sr)) + bce(sf, torch.zeros_like(sf))
                      + F.cross_entropy(cr, y) + F.cross_entropy(cf, y))
            self._update(self.opt_d, d_loss)
            sg, cg = self._d_for_g(fake, y)
            g_loss = bce(sg, torch.ones_like(sg)) + F.cross_entropy(cg, y)
            self._update(self.opt_g, g_loss)
        return float(d_loss.detach()), float(g_loss.detach())


def bench(c, batch, steps, warmup=2):
    """Mean seconds per train_step after `warmup` untimed steps, and the Gan (for its parameter counts).
    Mirrors bench_step_on in src/models/bench.rs: a fresh GAN (seed 0), one fixed random batch."""
    gan = Gan(c)
    s = c["image_size"]
    real = torch.rand(batch, 3, s, s) * 2 - 1
    y = torch.randint(0, c["num_classes"], (batch,))
    for _ in range(warmup):
        gan.train_step(real, y)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        gan.train_step(real, y)
    sync()
    return (time.perf_counter() - t0) / steps, gan


def sync():
    """Waits for queued GPU work (the train step's loss read-back already does; this makes it explicit)."""
    if torch.cuda.is_available() and torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def param_count(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def read_safetensors(path):
    """Minimal safetensors reader (F32 only), so no extra package is needed."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        lo, hi = info["data_offsets"]
        buf = bytearray(data[8 + n + lo:8 + n + hi])
        out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(info["shape"]) if hi > lo else \
            torch.zeros(info["shape"])
    return out


def load_strict(model, tensors):
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"name mismatch: missing {missing} unexpected {unexpected}")


def check(dirname):
    """Loads Rust-written generator/discriminator checkpoints and compares outputs on the same inputs."""
    with open(os.path.join(dirname, "config.json")) as f:
        c = json.load(f)
    gen, disc = Generator(c), Discriminator(c)
    load_strict(gen, read_safetensors(os.path.join(dirname, "generator.safetensors")))
    load_strict(disc, read_safetensors(os.path.join(dirname, "discriminator.safetensors")))
    io = read_safetensors(os.path.join(dirname, "io.safetensors"))
    gen.eval()
    disc.eval()
    y = io["labels"].long()
    with torch.no_grad():
        img = gen(io["z"], y)
        src, _ = disc(io["images"], y)
    d_img = (img - io["images"]).abs().max().item()
    d_src = (src - io["scores"]).abs().max().item()
    print(json.dumps({"gan": c["gan"], "disc": c["discriminator"], "max_abs_diff_generator": d_img,
                      "max_abs_diff_discriminator": d_src}))
    return d_img < 1e-4 and d_src < 1e-3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--gan", default="cgan", help="cgan | wgan-gp | acgan | all")
    ap.add_argument("--disc", default="all", help="cnn | vit | all")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (every tensor and module is created there)")
    ap.add_argument("--json", action="store_true", help="one JSON object per combination on stdout")
    ap.add_argument("--check", help="directory with a Rust parity fixture")
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.batch < 1 or a.threads < 1:
        ap.error("--steps, --batch and --threads must be >= 1 and --warmup >= 0")
    if a.preset not in PRESETS:
        ap.error(f"unknown preset {a.preset!r} (expected one of: {', '.join(PRESETS)})")
    torch.set_num_threads(a.threads)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {a.device}: torch {torch.__version__} sees no CUDA device")
    torch.set_default_device(a.device)
    if a.check:
        ok = all(check(os.path.join(a.check, d)) for d in sorted(os.listdir(a.check)))
        sys.exit(0 if ok else 1)
    gans = ["cgan", "wgan-gp", "acgan"] if a.gan == "all" else [a.gan]
    discs = ["cnn", "vit"] if a.disc == "all" else [a.disc]
    if any(g not in ("cgan", "wgan-gp", "acgan") for g in gans) or any(d not in ("cnn", "vit") for d in discs):
        ap.error("--gan must be cgan | wgan-gp | acgan | all and --disc cnn | vit | all")
    for g in gans:
        for d in discs:
            c = preset(a.preset, g, d)
            t, gan = bench(c, a.batch, a.steps, a.warmup)
            if a.json:
                print(json.dumps({"impl": "pytorch", "torch_version": torch.__version__, "preset": a.preset, "gan": g,
                                  "disc": d, "device": a.device, "batch": a.batch, "image_size": c["image_size"], "steps": a.steps,
                                  "warmup": a.warmup, "threads": torch.get_num_threads(), "secs_per_step": t,
                                  "ms_per_step": round(t * 1e3, 1), "g_params": param_count(gan.g),
                                  "d_params": param_count(gan.d)}), flush=True)
            else:
                print(f"pytorch {torch.__version__} {a.preset} {g}-{d} batch {a.batch} threads "
                      f"{torch.get_num_threads()}: {t * 1e3:.1f} ms/step ({a.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
