"""The networks (the assignment's two, plus the readouts of the "why" study, which share the encoder and change one
thing each), the one method table (METHODS), and checkpoint save/load with provenance checks.

Kernel choices the spec leaves open: every Conv2d is 3x3 / padding 1; every ConvTranspose2d is kernel 4, stride 2,
padding 1 (exact 2x upsampling, the SimpleBaseline/HRNet deconv head); the final heatmap conv is 1x1, no activation.
HeatmapNet (spec: hm_size=64, skip=True): encoder 1->32->64->128->256 channels, 128->8 px; deconv4 256->128 (8->16),
cat conv3 -> 256; deconv3 256->64 (16->32), cat conv2 -> 128; deconv2 128->32 (32->64); final 32->K. Ablations:
skip=False drops the concatenations (deconv3 then takes 128 channels, deconv2 64); hm_size=32 drops deconv2 (the
final conv reads the 32x32 features); hm_size=128 adds deconv1, ConvTranspose 32->32 + BN + ReLU (64->128).
RegressionNet (spec): the encoder, global average pooling, fc_head -> [B, 2K] in unit [0, 1] space.
"""
import math

import torch
import torch.nn as nn

from codec import soft_argmax
from common import UsageError, autocast, prepare_input, torch_load, torch_save


class AddCoords(nn.Module):
    """CoordConv (Liu et al. 2018): append x and y channels in [-1, 1] (pixel centres) to the input."""

    def forward(self, x):
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
        return torch.cat([x, xs, ys], 1)


def conv_block(in_ch, out_ch, coordconv=False):
    """Conv3x3 -> BN -> ReLU -> MaxPool2: one encoder stage (halves the spatial size)."""
    coords = [AddCoords()] if coordconv else []
    return nn.Sequential(*coords, nn.Conv2d(in_ch + 2 * coordconv, out_ch, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.MaxPool2d(2))


def fc_head(in_features, num_keypoints, plain=False, width=128):
    """The spec FC head: FC in->128 -> ReLU -> Dropout(0.5) -> FC 128->64 -> ReLU -> Dropout(0.5) -> FC 64->2K
    -> Sigmoid. plain=True drops the dropouts and the sigmoid (same layers otherwise); width: the first layer's."""
    drop = (lambda: nn.Identity()) if plain else (lambda: nn.Dropout(0.5))
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True), drop(),
                         nn.Linear(width, 64), nn.ReLU(inplace=True), drop(),
                         nn.Linear(64, num_keypoints * 2), nn.Identity() if plain else nn.Sigmoid())


def up_block(in_ch, out_ch):
    """ConvTranspose 4x4 stride 2 -> BN -> ReLU: one decoder stage (doubles the spatial size)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """[B, 1, 128, 128] -> features of conv2 (64@32x32), conv3 (128@16x16), conv4 (256@8x8)."""

    def __init__(self, coordconv=False):
        super().__init__()
        self.conv1 = conv_block(1, 32, coordconv)
        self.conv2 = conv_block(32, 64, coordconv)
        self.conv3 = conv_block(64, 128, coordconv)
        self.conv4 = conv_block(128, 256, coordconv)

    def forward(self, x):
        f2 = self.conv2(self.conv1(x))
        f3 = self.conv3(f2)
        f4 = self.conv4(f3)
        return f2, f3, f4


class HeatmapNet(nn.Module):
    method = "heatmap"  # build_model sets it on every model; this serves the spec networks built directly

    def __init__(self, num_keypoints=5, skip=True, hm_size=64):
        """num_keypoints: K; skip: U-Net concatenations on/off; hm_size: output heatmap size 32/64/128."""
        super().__init__()
        if hm_size not in (32, 64, 128):
            raise ValueError(f"hm_size must be 32, 64 or 128, got {hm_size}")
        self.num_keypoints, self.skip, self.hm_size = num_keypoints, skip, hm_size
        self.kwargs = dict(num_keypoints=num_keypoints, skip=skip, hm_size=hm_size)
        extra = 1 if skip else 0
        self.encoder = Encoder()
        self.deconv4 = up_block(256, 128)                   # 8 -> 16
        self.deconv3 = up_block(128 * (1 + extra), 64)      # 16 -> 32
        ch = 64 * (1 + extra)
        self.deconv2 = up_block(ch, 32) if hm_size >= 64 else nn.Identity()  # 32 -> 64
        ch = 32 if hm_size >= 64 else ch
        self.deconv1 = up_block(32, 32) if hm_size == 128 else nn.Identity()  # 64 -> 128
        self.final = nn.Conv2d(ch, num_keypoints, 1)

    def features(self, x):
        """The decoder's last feature map, before the final 1x1 conv: [B, C, hm_size, hm_size]."""
        f2, f3, f4 = self.encoder(x)
        x = self.deconv4(f4)
        if self.skip:
            x = torch.cat([x, f3], dim=1)
        x = self.deconv3(x)
        if self.skip:
            x = torch.cat([x, f2], dim=1)
        return self.deconv1(self.deconv2(x))

    def forward(self, x):
        return self.final(self.features(x))  # [B, K, hm_size, hm_size], no activation


class RegressionNet(nn.Module):
    method = "regression"  # as HeatmapNet's

    def __init__(self, num_keypoints=5, plain=False, coordconv=False):
        """Spec network by default; plain: FC head without dropout/sigmoid; coordconv: CoordConv encoder."""
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints, plain=plain, coordconv=coordconv)
        self.encoder = Encoder(coordconv)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = fc_head(256, num_keypoints, plain)

    def forward(self, x):
        f4 = self.encoder(x)[-1]
        return self.head(self.pool(f4).flatten(1))  # [B, 2K] in [0, 1] (unbounded when plain)


class FlattenRegressionNet(nn.Module):
    """No pooling: 1x1 conv 256->32 (+ ReLU) on the 8x8 map, flatten (32*8*8), the spec FC head."""

    def __init__(self, num_keypoints=5):
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints)
        self.encoder = Encoder()
        self.reduce = nn.Sequential(nn.Conv2d(256, 32, 1), nn.ReLU(inplace=True))
        self.head = fc_head(32 * 8 * 8, num_keypoints)

    def forward(self, x):
        return self.head(self.reduce(self.encoder(x)[-1]).flatten(1))


class DecoderRegressionNet(nn.Module):
    """HeatmapNet's decoder (skips on) up to its 32-channel 64x64 map, then GAP and the spec FC head."""

    def __init__(self, num_keypoints=5):
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints)
        self.body = HeatmapNet(num_keypoints)
        self.body.final = nn.Identity()  # unused: features() stops before it
        self.head = fc_head(32, num_keypoints)

    def forward(self, x):
        return self.head(self.body.features(x).mean((2, 3)))


class SpatialReadoutNet(nn.Module):
    """A weight-shared spatial readout alone: 1x1 conv 256->K on the 8x8 encoder map. softargmax=True:
    expected (x, y) under a spatial softmax ([B, 2K] unit coords); else the 8x8 maps as heatmaps."""

    def __init__(self, num_keypoints=5, softargmax=True):
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints, softargmax=softargmax)
        self.softargmax = softargmax
        self.encoder = Encoder()
        self.final = nn.Conv2d(256, num_keypoints, 1)

    def forward(self, x):
        maps = self.final(self.encoder(x)[-1])  # [B, K, 8, 8]
        return soft_argmax(maps) if self.softargmax else maps


class IntegralNet(nn.Module):
    """Integral regression / soft-argmax (Sun et al. 2018; DSNT, Nibali et al. 2018): the HeatmapNet body and the
    expected (x, y) under a spatial softmax per keypoint: [B, 2K] unit coordinates, trained like RegressionNet."""

    def __init__(self, num_keypoints=5, skip=True, hm_size=64):
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints, skip=skip, hm_size=hm_size)
        self.body = HeatmapNet(num_keypoints, skip, hm_size)

    def forward(self, x):
        return soft_argmax(self.body(x))  # [B, 2K] = (x0, y0, x1, y1, ...) in unit space


class RealNVP(nn.Module):
    """RLE's residual density G on R^2 (Li et al. 2021, their released code): 3 pairs of affine coupling
    layers (alternating masks, 2-64-64-2 LeakyReLU nets, tanh scales) over a standard normal prior."""

    def __init__(self, layers=6, hidden=64):
        super().__init__()
        net = lambda last: nn.Sequential(nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden),  # noqa: E731
                                         nn.LeakyReLU(), nn.Linear(hidden, 2), *last)
        self.register_buffer("mask", torch.tensor([[0.0, 1.0], [1.0, 0.0]] * (layers // 2)))
        self.s = nn.ModuleList(net([nn.Tanh()]) for _ in range(layers))
        self.t = nn.ModuleList(net([]) for _ in range(layers))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def log_prob(self, x):
        """log G(x) for x [N, 2]: map x back to the prior through the couplings, add the log-Jacobian."""
        z, log_det = x.float(), x.new_zeros(len(x), dtype=torch.float32)
        for i in reversed(range(len(self.t))):
            keep = self.mask[i] * z
            s = self.s[i](keep) * (1 - self.mask[i])
            z = keep + (1 - self.mask[i]) * (z - self.t[i](keep)) * torch.exp(-s)
            log_det = log_det - s.sum(1)
        return -0.5 * (z ** 2).sum(1) - math.log(2 * math.pi) + log_det


class LikelihoodRegressionNet(nn.Module):
    """GAP + the plain FC head emitting [B, 4K]: 2K unit coordinates, then 2K scale logits for the likelihood losses
    (codec laplace / rle). flow=True adds RLE's RealNVP, used by the loss in training only."""

    def __init__(self, num_keypoints=5, flow=True):
        super().__init__()
        self.kwargs = dict(num_keypoints=num_keypoints, flow=flow)
        self.encoder = Encoder()
        self.head = fc_head(256, 2 * num_keypoints, plain=True)
        self.flow = RealNVP() if flow else None

    def forward(self, x):
        return self.head(self.encoder(x)[-1].mean((2, 3)))


def with_plain_head(model):
    """`model` with its spec FC head replaced by the same layers without dropout and sigmoid (fc_head plain=True)."""
    model.head = fc_head(model.head[0].in_features, model.kwargs["num_keypoints"], plain=True)
    return model


def with_wide_head(model):
    """`model` (a RegressionNet) with its FC head's first layer widened until the head has as many parameters as
    FlattenRegressionNet's 1x1 conv and FC head together: flattening's extra weights, without the 8x8 layout."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):  # counted, not initialised: the seed's random stream stays the spec network's
        k2, flat = model.kwargs["num_keypoints"] * 2, FlattenRegressionNet(model.kwargs["num_keypoints"])
    # head params = (256 + 1 + 64) * width + 64 + (64 + 1) * 2K, solved for width
    width = round((count(flat.reduce) + count(flat.head) - 64 - 65 * k2) / (256 + 1 + 64))
    model.head = fc_head(256, model.kwargs["num_keypoints"], width=width)
    return model


def with_pooled_reduce(model):
    """`model` (a FlattenRegressionNet) averaging its 32 reduced channels over the 8x8 map, as RegressionNet does,
    instead of flattening them: flattening's 1x1 conv without the map's layout."""
    model.reduce.append(nn.AdaptiveAvgPool2d(1))  # no parameters: the state dict and the seed stream are unchanged
    model.head = fc_head(32, model.kwargs["num_keypoints"])
    return model


def head_without(model, layer_type):
    """`model` with every `layer_type` layer of its FC head (nn.Dropout or nn.Sigmoid) replaced by nn.Identity; the
    weights, and so the initialisation under a seed, stay the spec network's."""
    model.head = nn.Sequential(*(nn.Identity() if isinstance(m, layer_type) else m for m in model.head))
    return model


# One row per method: constructor (with its fixed options), target representation (codec.encode/decode), display
# name, target overrides (heatmap size / sigma in heatmap px). Adding a method = one row (+ a class if it is new).
def _row(model, target, name, **target_kwargs):
    return {"model": model, "target": target, "name": name, "target_kwargs": target_kwargs}


METHODS = {
    "heatmap": _row(HeatmapNet, "heatmap", "HeatmapNet"),
    "regression": _row(RegressionNet, "regression", "RegressionNet"),
    "integral": _row(IntegralNet, "regression", "IntegralNet (soft-argmax)"),
    "gap_fc_plain": _row(lambda **kw: RegressionNet(**{**kw, "plain": True}), "regression", "GAP + FC, no dropout/sigmoid"),
    "gap_fc_nodropout": _row(lambda **kw: head_without(RegressionNet(**kw), nn.Dropout), "regression",
                             "GAP + FC, no dropout (sigmoid kept)"),
    "gap_fc_nosigmoid": _row(lambda **kw: head_without(RegressionNet(**kw), nn.Sigmoid), "regression",
                             "GAP + FC, no sigmoid (dropout kept)"),
    "flatten_fc": _row(FlattenRegressionNet, "regression", "flatten 8x8 + FC"),
    "flatten_fc_nodropout": _row(lambda **kw: head_without(FlattenRegressionNet(**kw), nn.Dropout), "regression",
                                 "flatten 8x8 + FC, no dropout (sigmoid kept)"),
    "flatten_fc_plain": _row(lambda **kw: with_plain_head(FlattenRegressionNet(**kw)), "regression",
                             "flatten 8x8 + FC, no dropout/sigmoid"),
    "reduce_gap_fc": _row(lambda **kw: with_pooled_reduce(FlattenRegressionNet(**kw)), "regression",
                          "1x1 conv to 32 channels + GAP + FC"),
    "gap_fc_wide": _row(lambda **kw: with_wide_head(RegressionNet(**kw)), "regression",
                        "GAP + FC, first FC layer widened to flattening's parameter count"),
    "coordconv_gap_fc": _row(lambda **kw: RegressionNet(**{**kw, "coordconv": True}), "regression", "CoordConv + GAP + FC"),
    "gap_fc_nll": _row(LikelihoodRegressionNet, "regression", "GAP + FC with a learned scale (likelihood loss)"),
    "decoder64_gap_fc": _row(DecoderRegressionNet, "regression", "decoder to 64x64 + GAP + FC"),
    "softargmax_8": _row(lambda **kw: SpatialReadoutNet(**{**kw, "softargmax": True}), "regression", "soft-argmax at 8x8"),
    "heatmap_8": _row(lambda **kw: SpatialReadoutNet(**{**kw, "softargmax": False}), "heatmap", "heatmap at 8x8",
                      hm_size=8, sigma=1.0),
}


LIKELIHOOD_METHODS = ("gap_fc_nll",)  # predicts a scale: trains with codec's laplace / rle


def build_model(method, **kwargs):
    """A fresh model of METHODS[method] (kwargs: the constructor's options, e.g. hm_size, skip)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    model = METHODS[method]["model"](**kwargs)
    model.method = method
    return model


def model_config(model):
    """{'method', 'class', **constructor kwargs}: rebuilds `model` with build_model (stored in checkpoints)."""
    return {"method": model.method, "class": type(model).__name__, **model.kwargs}


def save_checkpoint(path, model, **extra):
    """Atomically save {'config', 'state_dict', **extra} (plain types: loads with weights_only=True)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch_save(path, {"config": model_config(model), "state_dict": state, **extra})


def load_checkpoint(path, map_location="cpu", method=None, made_by="python problem2/train.py"):
    """(model in eval mode, checkpoint dict) saved at `path`. A missing, truncated or foreign file, or (with `method`)
    another method's checkpoint, is a UsageError naming the file, what it holds and what to run."""
    ckpt = torch_load(path, made_by)
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(cfg, dict) or cfg.get("method") not in METHODS or "state_dict" not in ckpt:
        raise UsageError(f"{path} is not a checkpoint of this project; delete it and rerun `{made_by}`")
    if method is not None and cfg["method"] != method:
        raise UsageError(f"{path} holds a '{cfg['method']}' model ({cfg.get('class', '?')}), expected '{method}'; "
                         f"put the right file there or rerun `{made_by}`")
    kwargs = {k: v for k, v in cfg.items() if k not in ("method", "class")}
    try:
        model = build_model(cfg["method"], **kwargs)
    except (TypeError, ValueError) as e:  # an option the constructor does not take, or a value it refuses
        raise UsageError(f"{path}: its config {kwargs} does not build a '{cfg['method']}' model ({e}); "
                         f"rerun `{made_by}`") from None
    if cfg.get("class", type(model).__name__) != type(model).__name__:
        raise UsageError(f"{path}: class {cfg['class']} does not match method '{cfg['method']}'")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise UsageError(f"{path}: weights do not fit {type(model).__name__} ({str(e).splitlines()[0]}); "
                         f"rerun `{made_by}`") from None
    return model.to(map_location).eval(), ckpt


def target_of(model):
    """The target representation ('heatmap' | 'regression') a model's outputs are in (from METHODS)."""
    return METHODS[model.method]["target"]


@torch.no_grad()
def run_model(model, loader, device="cpu", precision="fp32"):
    """Raw outputs of `model` over a non-shuffled loader, concatenated on the CPU as float32."""
    model.eval()
    outputs = []
    for images, _ in loader:
        with autocast(device, precision):
            outputs.append(model(prepare_input(images, device)).float().cpu())
    return torch.cat(outputs)
