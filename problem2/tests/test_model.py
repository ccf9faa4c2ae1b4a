import pytest
import torch


from codec import decode, encode, keypoint_loss
from common import UsageError
from model import LIKELIHOOD_METHODS, METHODS, HeatmapNet, RegressionNet, build_model, load_checkpoint, model_config, save_checkpoint


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("hm_size", [32, 64, 128])
def test_heatmap_variants_shapes(skip, hm_size):
    model = HeatmapNet(skip=skip, hm_size=hm_size).eval()
    out = model(torch.rand(2, 1, 128, 128))
    assert out.shape == (2, 5, hm_size, hm_size)


def test_spec_network_defaults():
    model = HeatmapNet()
    assert model.skip and model.hm_size == 64
    assert model.deconv4[0].in_channels == 256 and model.deconv4[0].out_channels == 128
    assert model.deconv3[0].in_channels == 256 and model.deconv3[0].out_channels == 64   # after concat conv3
    assert model.deconv2[0].in_channels == 128 and model.deconv2[0].out_channels == 32   # after concat conv2
    assert model.final.in_channels == 32 and model.final.out_channels == 5
    enc = [getattr(model.encoder, f"conv{i}")[0] for i in range(1, 5)]
    assert [(c.in_channels, c.out_channels) for c in enc] == [(1, 32), (32, 64), (64, 128), (128, 256)]
    no_skip = HeatmapNet(skip=False)
    assert no_skip.deconv3[0].in_channels == 128 and no_skip.deconv2[0].in_channels == 64


def test_regression_output_shape_and_range():
    model = RegressionNet().eval()
    out = model(torch.randn(4, 1, 128, 128) * 10)
    assert out.shape == (4, 10) and (out >= 0).all() and (out <= 1).all()
    assert model.head[0].in_features == 256 and model.head[-2].out_features == 10


@pytest.mark.parametrize("method, gone, kept", [("gap_fc_nodropout", torch.nn.Dropout, torch.nn.Sigmoid),
                                                ("gap_fc_nosigmoid", torch.nn.Sigmoid, torch.nn.Dropout),
                                                ("gap_fc_plain", (torch.nn.Dropout, torch.nn.Sigmoid), ())])
def test_single_factor_heads_remove_one_layer_kind_and_keep_the_spec_init(method, gone, kept):
    """The one-factor variants of RegressionNet's head differ from it only in the removed layers: under one seed they
    start from RegressionNet's very weights, so a paired difference measures the removal alone."""
    torch.manual_seed(0)
    spec = build_model("regression")
    torch.manual_seed(0)
    variant = build_model(method)
    kinds = [type(m) for m in variant.head]
    assert not any(issubclass(k, gone) for k in kinds) and (not kept or kept in kinds)
    assert [k for k in kinds if k is not torch.nn.Identity] == [
        type(m) for m in spec.head if not isinstance(m, gone) and not isinstance(m, torch.nn.Identity)]
    assert all(torch.equal(a, b) for a, b in zip(spec.state_dict().values(), variant.state_dict().values()))


def test_the_wide_pooled_head_matches_the_flattened_networks_parameter_count_and_the_spec_encoder():
    """gap_fc_wide, the capacity control for flattening: as many parameters as flatten_fc (to one unit of its width)
    and, under one seed, RegressionNet's encoder weights."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    torch.manual_seed(0)
    spec = build_model("regression")
    torch.manual_seed(0)
    wide = build_model("gap_fc_wide")
    assert abs(count(wide) - count(build_model("flatten_fc"))) <= 256 + 1 + 64
    assert count(wide) > count(spec) + 200_000 and wide.head[0].out_features > 128
    assert all(torch.equal(a, b) for a, b in zip(spec.encoder.state_dict().values(), wide.encoder.state_dict().values()))
    assert wide(torch.zeros(2, 1, 128, 128)).shape == (2, 10)


def test_encoder_is_shared_code():
    encoders = [build_model(m).encoder if hasattr(build_model(m), "encoder") else build_model(m).body.encoder
                for m in METHODS if m != "coordconv_gap_fc"]
    ref = encoders[0].state_dict()
    for enc in encoders:
        enc.load_state_dict(ref)   # the same encoder: same parameter names and shapes in every readout


@pytest.mark.parametrize("model", [HeatmapNet(skip=False, hm_size=32), RegressionNet()])
def test_checkpoint_round_trip(tmp_path, model):
    model.eval()
    path = tmp_path / "m.pth"
    save_checkpoint(path, model, epoch=3, val_loss=0.5)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["config"] == model_config(model)
    loaded, _ = load_checkpoint(path)
    x = torch.rand(2, 1, 128, 128)
    assert torch.equal(loaded(x), model(x))
    cfg = model_config(model)
    assert type(build_model(cfg["method"], **{k: v for k, v in cfg.items() if k not in ("method", "class")})) is type(model)
    assert not list(tmp_path.glob(".*tmp*"))   # no temp file left behind
    with pytest.raises(UsageError, match="m.pth holds a '.*' model .*, expected 'integral'"):
        load_checkpoint(path, method="integral")


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_row_builds_trains_one_step_and_decodes(method):
    """One row of the method table is all a method needs: build, encode targets, loss, a training step, decode."""
    torch.manual_seed(0)
    row = METHODS[method]
    model = build_model(method)
    kp = torch.rand(4, 5, 2) * 80 + 24
    tk = row["target_kwargs"]
    targets = encode(row["target"], kp, tk.get("hm_size", getattr(model, "hm_size", 64)), tk.get("sigma", 2.0))
    images = torch.rand(4, 1, 128, 128)
    out = model(images)
    loss_kind = "rle" if method in LIKELIHOOD_METHODS else "mse"  # the likelihood heads add a scale per coordinate
    assert out.shape == (targets.shape if loss_kind == "mse" else (4, 2 * targets.shape[1]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for hand_loss in ("strict", "symmetric"):
        loss = keypoint_loss(model(images), targets, hand_loss, loss_kind, getattr(model, "flow", None))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert decode(row["target"], model.eval()(images).detach()).shape == (4, 5, 2)
    assert model_config(model)["method"] == method
