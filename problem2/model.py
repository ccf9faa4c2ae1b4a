"""The two networks of the assignment, their shared encoder, and checkpoint save/load.

Kernel choices the spec leaves open: every Conv2d is 3x3 / padding 1; every ConvTranspose2d is
kernel 4, stride 2, padding 1 (exact 2x upsampling, the SimpleBaseline/HRNet deconv head); the final
heatmap conv is 1x1.

Encoder (shared code): conv1..conv4 = Conv3x3 -> BN -> ReLU -> MaxPool2
    1->32 (128->64), 32->64 (64->32), 64->128 (32->16), 128->256 (16->8)
HeatmapNet decoder (spec, hm_size=64, skip=True):
    deconv4 256->128 (8->16), cat conv3 (128) -> 256
    deconv3 256->64 (16->32), cat conv2 (64)  -> 128
    deconv2 128->32 (32->64)
    final   1x1 conv 32->K, no activation -> [B, K, 64, 64]
Ablation options (defaults give the spec network):
    skip=False : no concatenation; deconv3 takes 128 channels, deconv2 takes 64.
    hm_size=32 : deconv2 is dropped; the final 1x1 conv reads the 32x32 features (128 ch, or 64 w/o skip).
    hm_size=128: one more up stage, ConvTranspose 32->32 + BN + ReLU (64->128), then the final conv.
IntegralNet (the "why" study's third method): HeatmapNet body -> spatial softmax -> expected (x, y).
RegressionNet head: global average pool -> FC 256->128 -> ReLU -> Dropout(0.5) -> FC 128->64 -> ReLU
    -> Dropout(0.5) -> FC 64->2K -> Sigmoid -> [B, 2K] = (x0, y0, x1, y1, ...) in unit [0, 1] space.
"""
import contextlib
from pathlib import Path

import torch
import torch.nn as nn

from dataset import atomic_torch_save, hm_to_img, img_to_unit


def conv_block(in_ch, out_ch):
    """Conv3x3 -> BN -> ReLU -> MaxPool2: one encoder stage (halves the spatial size)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def up_block(in_ch, out_ch):
    """ConvTranspose 4x4 stride 2 -> BN -> ReLU: one decoder stage (doubles the spatial size)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """[B, 1, 128, 128] -> features of conv2 (64@32x32), conv3 (128@16x16), conv4 (256@8x8)."""

    def __init__(self):
        super().__init__()
        self.conv1 = conv_block(1, 32)
        self.conv2 = conv_block(32, 64)
        self.conv3 = conv_block(64, 128)
        self.conv4 = conv_block(128, 256)

    def forward(self, x):
        f2 = self.conv2(self.conv1(x))
        f3 = self.conv3(f2)
        f4 = self.conv4(f3)
        return f2, f3, f4


class HeatmapNet(nn.Module):
    output_type = "heatmap"

    def __init__(self, num_keypoints=5, skip=True, hm_size=64):
        """num_keypoints: K; skip: U-Net concatenations on/off; hm_size: output heatmap size 32/64/128."""
        super().__init__()
        if hm_size not in (32, 64, 128):
            raise ValueError(f"hm_size must be 32, 64 or 128, got {hm_size}")
        self.num_keypoints, self.skip, self.hm_size = num_keypoints, skip, hm_size
        extra = 1 if skip else 0
        self.encoder = Encoder()
        self.deconv4 = up_block(256, 128)                   # 8 -> 16
        self.deconv3 = up_block(128 * (1 + extra), 64)      # 16 -> 32
        ch = 64 * (1 + extra)
        self.deconv2 = up_block(ch, 32) if hm_size >= 64 else nn.Identity()  # 32 -> 64
        ch = 32 if hm_size >= 64 else ch
        self.deconv1 = up_block(32, 32) if hm_size == 128 else nn.Identity()  # 64 -> 128
        self.final = nn.Conv2d(ch, num_keypoints, 1)

    def forward(self, x):
        f2, f3, f4 = self.encoder(x)
        x = self.deconv4(f4)
        if self.skip:
            x = torch.cat([x, f3], dim=1)
        x = self.deconv3(x)
        if self.skip:
            x = torch.cat([x, f2], dim=1)
        x = self.deconv1(self.deconv2(x))
        return self.final(x)  # [B, K, hm_size, hm_size], no activation


class RegressionNet(nn.Module):
    output_type = "regression"

    def __init__(self, num_keypoints=5):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.encoder = Encoder()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(128, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(64, num_keypoints * 2), nn.Sigmoid())

    def forward(self, x):
        f4 = self.encoder(x)[-1]
        return self.head(self.pool(f4).flatten(1))  # [B, 2K] in [0, 1]


class IntegralNet(nn.Module):
    """Integral regression / soft-argmax (Sun et al. 2018; DSNT, Nibali et al. 2018): the HeatmapNet body,
    a spatial softmax per keypoint, and the expected (x, y) under it. Outputs [B, 2K] unit coordinates
    like RegressionNet, so it trains with the same coordinate MSE, but keeps the heatmap's geometry."""
    output_type = "regression"

    def __init__(self, num_keypoints=5, skip=True, hm_size=64):
        super().__init__()
        self.num_keypoints, self.skip, self.hm_size = num_keypoints, skip, hm_size
        self.body = HeatmapNet(num_keypoints, skip, hm_size)

    def forward(self, x):
        return soft_argmax(self.body(x))  # [B, 2K] = (x0, y0, x1, y1, ...) in unit space


def soft_argmax(logits):
    """Expected (x, y) under a spatial softmax of each channel: [B, K, S, S] -> [B, 2K] in unit [0, 1] space
    (cell centres mapped with dataset's convention, so a centred symmetric blob decodes to its centre)."""
    probs = logits.float().flatten(2).softmax(-1).view(logits.shape)
    s = probs.shape[-1]
    centres = img_to_unit(hm_to_img(torch.arange(s, dtype=probs.dtype, device=probs.device), s))
    x_unit = (probs.sum(2) * centres).sum(-1)  # marginal over rows -> expected x
    y_unit = (probs.sum(3) * centres).sum(-1)
    return torch.stack([x_unit, y_unit], -1).flatten(1)


# ----------------------------------------------------------------------------- checkpoints
def model_config(model):
    """The constructor arguments that rebuild `model` (stored in every checkpoint)."""
    if isinstance(model, HeatmapNet):
        return {"method": "heatmap", "num_keypoints": model.num_keypoints, "skip": model.skip,
                "hm_size": model.hm_size}
    if isinstance(model, RegressionNet):
        return {"method": "regression", "num_keypoints": model.num_keypoints}
    if isinstance(model, IntegralNet):
        return {"method": "integral", "num_keypoints": model.num_keypoints, "skip": model.skip,
                "hm_size": model.hm_size}
    raise TypeError(f"unknown model type {type(model).__name__}")


def build_model(config):
    """Inverse of model_config."""
    kwargs = {k: v for k, v in config.items() if k != "method"}
    return {"heatmap": HeatmapNet, "regression": RegressionNet, "integral": IntegralNet}[config["method"]](**kwargs)


def save_checkpoint(path, model, **extra):
    """Atomically save {'config', 'state_dict', **extra} (plain types: loads with weights_only=True)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_torch_save(path, {"config": model_config(model), "state_dict": state, **extra})


def load_checkpoint(path, map_location="cpu"):
    """Rebuild the model saved at `path`; returns (model in eval mode, checkpoint dict)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


# ----------------------------------------------------------------------------- device and precision
def pick_device(name="auto"):
    """'auto' -> CUDA when present, else CPU."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def cpu_has_bf16():
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16
    autocast + channels_last roughly doubles conv training speed; elsewhere bf16 is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def pick_precision(name="auto", device="cpu"):
    """'auto' -> 'bf16' on CUDA and on CPUs with native bf16, else 'fp32'."""
    if name != "auto":
        return name
    return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"


def autocast(device, precision):
    """Autocast context for bf16 (convs/matmuls in bf16, losses in fp32); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def prepare_input(images, device):
    """Move a batch to the device in channels_last layout (what oneDNN/cuDNN convs run fastest on)."""
    return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
