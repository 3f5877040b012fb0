"""A 3D convolutional β-VAE: voxel occupancy grids in, occupancy anywhere out.

    config = ShapeVAEConfig(resolution=32, latent_dim=64, decoder="implicit")
    vae = ShapeVAE(config)
    logits, mu, logvar = vae(grids, points)          # grids B×1×R×R×R in {0, 1}, points B×P×3
    loss, parts = vae_loss(logits, labels, mu, logvar, kl_weight(step, config), config)

    ShapeVAE(ShapeVAEConfig())(grids)                # the default 64³ grid decoder: logits B×1×64×64×64,
                                                     # from a latent of 8 numbers per cell of a 4³ grid

Two decoders share the encoder and the latent space. "implicit" (engine/shape/implicit.py)
decodes the latent into a coarse feature grid (the trunk's, R/2 by default) × `features` and a small MLP gives the
occupancy logit at any point from the features there and the point's Fourier encoding; it is
trained on points near and away from each shape's surface and meshed at any resolution.
"grid" ends in one logit per voxel of the R³ grid.

Encoder: the grid folded 2×2×2 voxels into 8 channels (space-to-depth, lossless), a 3³
convolution at half resolution, stride-2 4³ convolutions down to 4³, then the mean and
log-variance of a diagonal Gaussian: by default 8 numbers for each of the 4³ cells (a 1³
convolution; `latent="grid"`), or one vector for the whole shape (a linear layer;
`latent="vector"`, the models shipped before). The latent is flat either way (B×latent_dim), so
sampling, interpolation and encoding treat both alike. The decoder mirrors the encoder with
transposed convolutions, ends in 8 logits per half-resolution cell and unfolds them into
one occupancy logit per voxel (depth-to-space). Folding keeps every convolution off the
full-resolution grid, where 1-channel 3D convolutions are slow on CPUs: it is about 6×
faster to train than a full-resolution stem and output layer, at the same latent size. A 64³ grid is
folded twice (64 channels per 4×4×4 block), so it runs on the 16³ trunk of a 32³ model; only the
first and last convolutions and the loss grow.

Grid decoder: occupancy is sparse (a chair fills ~5 % of its cube), so plain BCE learns "empty".
Two remedies: focal loss (Lin et al. 2017), which down-weights the many easy empty
voxels, or BCE with a larger weight on occupied voxels (Brock et al. 2016). Both
are summed over voxels so the KL term, summed over latent dimensions, is on the
same per-shape scale (the implicit decoder's BCE is summed over the shape's points, half of
them near its surface, which is already balanced); β multiplies the KL and rises linearly from 0 over
`kl_warmup_steps` so the decoder learns to use the latent before it is squeezed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.shape.implicit import PointHead

MAX_CODES = 1024  # training shapes' codes kept for sampling (fit_prior)


@dataclass
class ShapeVAEConfig:
    # Grid side: a power of two, 8..128. 64 by default: on the real-mesh collection a perfect 32³ decoder
    # scores 0.70 held-out IoU, a perfect 64³ one 0.95, and at 5 CPU minutes the 64³ model reconstructed
    # held-out meshes at 0.584 against the 32³ model's 0.554 (docs/BENCHMARKS.md, shape section). The
    # shipped model (engine/recipes/shape.toml) is 64³ too; 0.4 M parameters either way (1.1-1.2 M with one
    # latent vector).
    resolution: int = 64
    latent_dim: int = 512      # "grid": 8 numbers per 4³ cell; "vector": 64..256 in practice
    width: int = 16            # channels at half resolution; doubles at each level down, capped at 8×
    beta: float = 0.25         # final KL weight (small: sharp reconstructions; sampling uses the fitted prior)
    kl_warmup_steps: int = 200
    loss: str = "focal"        # "focal" or "bce"
    focal_gamma: float = 2.0
    focal_alpha: float = 0.6   # weight of occupied voxels in the focal loss
    pos_weight: float = 3.0    # weight of occupied voxels in "bce"
    # "grid" (one logit per voxel) or "implicit" (occupancy at any point). Grid is the default: in 15 CPU
    # minutes on the real-mesh collection it reconstructed held-out meshes better (IoU 0.54 vs 0.48,
    # F@1 % 0.130 vs 0.121; implicit only won on Chamfer, 0.052 vs 0.072) and meshes 3x faster
    # (docs/BENCHMARKS.md, shape section).
    decoder: str = "grid"
    features: int = 32         # implicit: channels of the trunk-sized feature grid, and width of the point MLP
    frequencies: int = 4       # implicit: Fourier octaves of the point's position
    points: int = 1024         # implicit: training points per shape and step (half near the surface)
    # Times the grid is folded 2×2×2 into channels before the first convolution (and the grid decoder's
    # logits unfolded at the end); 0: as often as leaves a 16³ trunk (1 up to 32³), so a 64³ model runs
    # on the trunk of a 32³ one at about its cost.
    fold: int = 0
    # "vector": the 4³ bottleneck goes through a linear layer to one code for the whole shape. "grid": each
    # bottleneck cell keeps its own latent_dim/64 numbers (a 1³ convolution), so a code describes the
    # shape part by part (the convolutional-occupancy family's local latents). Grid is the default: at 5
    # CPU minutes on the real-mesh collection it reconstructed held-out meshes at IoU 0.714 (8 numbers
    # per cell) against one 64-number vector's 0.597 (docs/BENCHMARKS.md, shape section).
    latent: str = "grid"

    def __post_init__(self) -> None:
        r = self.resolution
        if r < 8 or r > 128 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two between 8 and 128, got {r}")
        if self.latent_dim < 1 or self.width < 1:
            raise ValueError("latent_dim and width must be positive")
        if self.loss not in ("focal", "bce"):
            raise ValueError(f"loss must be 'focal' or 'bce', got {self.loss!r}")
        if self.decoder not in ("implicit", "grid"):
            raise ValueError(f"decoder must be 'implicit' or 'grid', got {self.decoder!r}")
        if self.latent not in ("vector", "grid"):
            raise ValueError(f"latent must be 'vector' or 'grid', got {self.latent!r}")
        if self.latent == "grid" and self.latent_dim % 64:
            raise ValueError(f"a grid latent keeps latent_dim/64 numbers per cell of its 4³ grid: latent_dim must "
                             f"be a multiple of 64, got {self.latent_dim} (or set latent='vector' for one code "
                             f"of any size)")
        if self.fold == 0:
            self.fold = max(1, int(math.log2(max(r // 16, 1))))
        if self.fold < 1 or r >> self.fold < 4:
            raise ValueError(f"fold must be at least 1 and leave at least a 4³ grid, got {self.fold} at {r}³")

    @property
    def stem(self) -> int:
        """Side of the grid the first convolution runs on (and the implicit decoder's feature grid)."""
        return self.resolution >> self.fold

    @property
    def levels(self) -> int:
        return int(math.log2(self.stem // 2))

    def channels(self, level: int) -> int:
        return self.width * min(2 ** level, 8)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def fold(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Space-to-depth: B×C×R×R×R -> B×8C×(R/2)³, each 2×2×2 block into channels (`times` over)."""
    for _ in range(times - 1):
        x = fold(x)
    b, c, r = x.shape[:3]
    h = r // 2
    return x.reshape(b, c, h, 2, h, 2, h, 2).permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * 8, h, h, h)


def unfold(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Depth-to-space, the inverse of `fold`: B×8C×H³ -> B×C×(2H)³ (`times` over)."""
    b, c8, h = x.shape[:3]
    c = c8 // 8
    x = x.reshape(b, c, 2, 2, 2, h, h, h).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c, 2 * h, 2 * h, 2 * h)
    return unfold(x, times - 1) if times > 1 else x


class Conv3d(nn.Conv3d):
    """nn.Conv3d that takes oneDNN on a CPU at inference. Torch's heuristic (written for 2D)
    sends one shape through a 3³ kernel to its slow reference kernel: 47 ms instead of 7 ms
    for 16 channels at 32³, most of a 64³ decode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled() \
                and torch.backends.mkldnn.is_available() and self.padding_mode == "zeros":
            return torch.ops.aten.mkldnn_convolution(x.contiguous(), self.weight, self.bias, self.padding,
                                                     self.stride, self.dilation, self.groups)
        return super().forward(x)


class ShapeVAE(nn.Module):
    def __init__(self, config: ShapeVAEConfig):
        super().__init__()
        self.config = c = config
        top = c.channels(c.levels - 1)  # channels at the 4³ bottleneck
        down = [Conv3d(8 ** c.fold, c.channels(0), 3, padding=1), _norm(c.channels(0)), nn.SiLU()]
        for i in range(c.levels - 1):
            down += [nn.Conv3d(c.channels(i), c.channels(i + 1), 4, stride=2, padding=1),
                     _norm(c.channels(i + 1)), nn.SiLU()]
        self.encoder = nn.Sequential(*down)
        if c.latent == "grid":
            self.to_stats = nn.Conv3d(top, 2 * c.latent_dim // 64, 1)
            self.from_latent = nn.Conv3d(c.latent_dim // 64, top, 1)
        else:
            self.to_stats = nn.Linear(top * 64, 2 * c.latent_dim)
            self.from_latent = nn.Linear(c.latent_dim, top * 64)
        up = [_norm(top), nn.SiLU()]
        for i in reversed(range(c.levels - 1)):
            up += [nn.ConvTranspose3d(c.channels(i + 1), c.channels(i), 4, stride=2, padding=1),
                   _norm(c.channels(i)), nn.SiLU()]
        out = c.features if c.decoder == "implicit" else 8 ** c.fold  # features per cell, or voxel logits to unfold
        self.decoder = nn.Sequential(*up, Conv3d(c.channels(0), out, 3, padding=1))
        self.head = PointHead(c.features, c.frequencies) if c.decoder == "implicit" else None
        # What sampling draws from, set by `fit_prior` and saved with the weights: the training
        # shapes' posteriors (K×latent means and standard deviations; none before fitting), and
        # one Gaussian over them (N(0, I) before fitting) for the centre and spread of the codes.
        self.register_buffer("codes_mean", torch.zeros(0, c.latent_dim))
        self.register_buffer("codes_std", torch.zeros(0, c.latent_dim))
        self.register_buffer("prior_mean", torch.zeros(c.latent_dim))
        self.register_buffer("prior_scale", torch.eye(c.latent_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("codes_mean", "codes_std"):  # as many codes as the saved model kept
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.prior_mean.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit_prior(self, grids: torch.Tensor, batch: int = 32, max_codes: int = MAX_CODES) -> None:
        """Keep q(z) = mean over training shapes x of q(z | x) for sampling, and fit one
        Gaussian to it (Cov of the means plus the mean posterior variance).

        With a small β most codes sit away from N(0, I)'s bulk, so prior draws decode to
        fragments (Ghosh et al. 2020). The fitted Gaussian is better, but it also fills the gaps
        between the shape families, where about half its draws decoded to slabs and debris;
        draws from the mixture itself (at most `max_codes` of its components) stay on the shapes.
        ShapeModel.keep_whole_codes (engine/shape/generation.py) then keeps the components that decode to one piece.
        """
        was_training = self.training
        self.eval()
        stats = [self.encode(grids[i:i + batch].float()) for i in range(0, len(grids), batch)]
        self.train(was_training)
        mu = torch.cat([m for m, _ in stats]).double()
        var = torch.cat([lv for _, lv in stats]).double().exp().mean(0)
        centred = mu - mu.mean(0)
        cov = centred.T @ centred / max(len(mu) - 1, 1) + torch.diag(var)
        eye = torch.eye(len(var), dtype=cov.dtype)
        self.prior_mean.copy_(mu.mean(0))
        self.prior_scale.copy_(torch.linalg.cholesky(cov + 1e-6 * eye))
        keep = torch.randperm(len(mu), generator=torch.Generator().manual_seed(0))[:max_codes].sort().values
        std = torch.cat([(0.5 * lv).exp() for _, lv in stats])
        self.codes_mean = mu[keep].float().to(self.prior_mean.device)
        self.codes_std = std[keep].float().to(self.prior_mean.device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B×latent each) of q(z | x) for occupancy grids B×1×R×R×R."""
        h = self.encoder(fold(x, self.config.fold))
        if self.config.latent == "vector":
            h = h.flatten(1)
        mu, logvar = (s.flatten(1) for s in self.to_stats(h).chunk(2, dim=1))
        return mu, logvar.clamp(-12.0, 8.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """For latents B×latent: the feature grid B×features×(R/2)³ ("implicit"), or occupancy
        logits B×1×R×R×R ("grid")."""
        c = self.config
        if c.latent == "grid":
            z = z.view(len(z), -1, 4, 4, 4)
        out = self.decoder(self.from_latent(z).view(-1, c.channels(c.levels - 1), 4, 4, 4))
        return out if self.head is not None else unfold(out, c.fold)

    def occupancy(self, features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Occupancy logits B×P at points B×P×3 (unit cube, [x, y, z]) of decoded feature grids."""
        return self.head(features, points)

    def forward(self, x: torch.Tensor, points: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        decoded = self.decode(z)
        return (decoded if self.head is None else self.occupancy(decoded, points)), mu, logvar


def kl_weight(step: int, config: ShapeVAEConfig) -> float:
    """β at `step`: linear warm-up from 0 to config.beta."""
    if config.kl_warmup_steps <= 0:
        return config.beta
    return config.beta * min(1.0, step / config.kl_warmup_steps)


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, config: ShapeVAEConfig) -> torch.Tensor:
    """Per-shape reconstruction loss (B), summed over voxels (grid) or points (implicit)."""
    if config.decoder == "implicit":
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
    if config.loss == "bce":
        weight = 1.0 + (config.pos_weight - 1.0) * target
        per_voxel = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="none")
    else:
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_true = torch.exp(-bce)  # probability given to the right answer
        alpha = config.focal_alpha * target + (1 - config.focal_alpha) * (1 - target)
        per_voxel = alpha * (1 - p_true) ** config.focal_gamma * bce
    return per_voxel.flatten(1).sum(1)


def vae_loss(logits: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float, config: ShapeVAEConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-mean of reconstruction + β·KL(q(z|x) ‖ N(0, I)), and the parts as floats."""
    recon = reconstruction_loss(logits, target, config).mean()
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(1).mean()
    loss = recon + beta * kl
    return loss, {"recon": recon.item(), "kl": kl.item(), "beta": beta}
