"""6DRepNet: released key layout, real loader, re-parameterisation, safetensors/ONNX, errors."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from faithfulfaces_core.checkpoints import read_metadata, save_checkpoint
from faithfulfaces_core.errors import (
    CheckpointError,
    FaithfulFacesError,
    MissingDependencyError,
    MissingModelError,
)
from faithfulfaces_core.pose.convert import main as convert_main
from faithfulfaces_core.pose.loading import find_pose_estimator_file, load_pose_estimator
from faithfulfaces_core.pose.onnx_estimator import OnnxPoseEstimator, onnx_providers
from faithfulfaces_core.pose.preprocess import IMAGENET_MEAN, IMAGENET_STD, crops_to_input
from faithfulfaces_core.pose.rotation import angle_difference, euler_from_rotation
from faithfulfaces_core.pose.sixdrepnet import (
    RELEASED_FILENAME,
    SixDRepNet,
    SixDRepNetEstimator,
    export_sixdrepnet_onnx,
    load_sixdrepnet,
    save_sixdrepnet,
)
from faithfulfaces_core.pose.types import PoseEstimator
from faithfulfaces_core.tiny.pose import build_random_sixdrepnet, random_sixdrepnet, tiny_sixdrepnet_config

SEED = 3


def released_layout() -> OrderedDict[str, tuple[int, ...]]:
    """The deploy key layout written out from the architecture description, independently of the code."""
    widths = [64, 128, 256, 512, 2048]
    blocks = [4, 6, 16, 1]
    layout: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    layout["layer0.rbr_reparam.weight"] = (64, 3, 3, 3)
    layout["layer0.rbr_reparam.bias"] = (64,)
    cin, index = 64, 1
    for stage, (count, cout) in enumerate(zip(blocks, widths[1:], strict=True), start=1):
        for i in range(count):
            groups = 2 if index % 2 == 0 and index <= 26 else 1
            layout[f"layer{stage}.{i}.rbr_reparam.weight"] = (cout, cin // groups, 3, 3)
            layout[f"layer{stage}.{i}.rbr_reparam.bias"] = (cout,)
            cin, index = cout, index + 1
    layout["linear_reg.weight"] = (6, 2048)
    layout["linear_reg.bias"] = (6,)
    return layout


@pytest.fixture(scope="module")
def train_model():
    return random_sixdrepnet(SEED, form="train")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, train_model):
    folder = tmp_path_factory.mktemp("faithfulfaces")
    deploy = build_random_sixdrepnet(folder / RELEASED_FILENAME, SEED)
    train = (
        folder / "train_checkpoint.pth"
    )  # what build_random_sixdrepnet(form="train") writes, without a rebuild
    torch.save({"epoch": 0, "model_state_dict": train_model.state_dict()}, train)
    return folder, deploy, train


@pytest.fixture
def inputs():
    """``[3, 3, 64, 64]`` normalised model inputs: the network is fully convolutional."""
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(SEED))


@pytest.fixture(scope="module")
def model(weights):
    return load_sixdrepnet(weights[1])


@pytest.fixture(scope="module")
def onnx_file(model, weights):
    return export_sixdrepnet_onnx(model, weights[0] / "6DRepNet_300W_LP_AFLW2000.onnx")


@pytest.fixture
def crops():
    seed = np.random.SeedSequence().entropy % 2**32
    print("seed", seed)
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(3, 7, 7, 3)).astype(np.float32)
    # smooth random images: upsample 7x7 noise to 224x224
    t = torch.nn.functional.interpolate(torch.from_numpy(low).permute(0, 3, 1, 2), size=224, mode="bilinear")
    return t.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def test_released_key_layout(weights):
    state = torch.load(weights[1], weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(released_layout())
    assert sum(v.numel() for v in state.values()) == 39_323_398  # RepVGG-B1g2 without its ImageNet classifier


def test_training_checkpoint_layout(tmp_path):
    path = build_random_sixdrepnet(tmp_path / "train.pth", 0, form="train", config=tiny_sixdrepnet_config())
    checkpoint = torch.load(path, weights_only=True)
    keys = set(checkpoint["model_state_dict"])
    assert checkpoint["epoch"] == 0
    assert "layer2.1.rbr_dense.conv.weight" in keys and "layer2.1.rbr_identity.running_var" in keys
    assert "layer2.0.rbr_identity.weight" not in keys  # stride 2 / width change: no identity branch
    assert checkpoint["model_state_dict"]["layer2.0.rbr_1x1.conv.weight"].shape == (
        32,
        8,
        1,
        1,
    )  # block 2: g2
    assert not any("rbr_reparam" in k for k in keys)


def test_loader_gives_deploy_model_with_the_files_weights(model, weights):
    assert isinstance(model, SixDRepNet) and model.deploy and not model.training
    state = torch.load(weights[1], weights_only=True)
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_train_form_and_reparameterised_deploy_form_agree(weights, train_model, model, inputs):
    assert not train_model.deploy
    loaded = load_sixdrepnet(weights[2])  # training checkpoint → re-parameterised on load
    assert loaded.deploy
    with torch.no_grad():
        a = euler_from_rotation(train_model(inputs).double())
        b = euler_from_rotation(loaded(inputs).double())
        # the builder's deploy file is this very re-parameterisation
        torch.testing.assert_close(euler_from_rotation(model(inputs).double()), b, atol=0, rtol=0)
        # float32 through 27 blocks: re-parameterisation changes the rounding only (measured ~3e-4)
        assert (a - b).abs().max().item() < 2e-3
        # in float64 the two forms are the same function
        train64 = copy.deepcopy(train_model).double()
        a64 = euler_from_rotation(train64(inputs.double()))
        b64 = euler_from_rotation(train64.reparameterize()(inputs.double()))
        assert (a64 - b64).abs().max().item() < 1e-4
        assert (a64 - b64).abs().max().item() < 1e-8
    # the random model is not degenerate: different inputs, different angles
    assert a.std(0).min().item() > 0.5


def test_estimator_protocol_and_onnx_runtime_agree(model, onnx_file, crops):
    torch_est = SixDRepNetEstimator(
        copy.deepcopy(model), device="cpu", batch_size=2
    )  # it takes the model over
    onnx_est = OnnxPoseEstimator(onnx_file, device="cpu", batch_size=2)
    assert isinstance(torch_est, PoseEstimator) and isinstance(onnx_est, PoseEstimator)
    assert onnx_est.providers == ["CPUExecutionProvider"] and onnx_est.input_size == 224
    a = torch_est.estimate(crops, [], [])
    b = onnx_est.estimate(crops, [], [])
    assert a.shape == (3, 3) and a.dtype == np.float32
    # measured ~2e-5 degrees; both see the same preprocessed input
    np.testing.assert_allclose(a, b, atol=1e-2, rtol=0)
    np.testing.assert_allclose(
        torch_est.rotations(crops[:1]), onnx_est.rotations(crops[:1]), atol=1e-4, rtol=0
    )


def test_crops_of_other_sizes_go_through_released_resize(crops):
    est = SixDRepNetEstimator(random_sixdrepnet(0, config=tiny_sixdrepnet_config(224)), device="cpu")
    from faithfulfaces_core.pose.preprocess import resize_center_crop

    tall = np.repeat(crops[:2], 2, axis=1)  # [2, 448, 224, 3]
    resized = np.stack([resize_center_crop(c, 224) for c in tall])
    np.testing.assert_array_equal(est.estimate(tall), est.estimate(resized))


def test_preprocessing_matches_torchvision(crops):
    from PIL import Image
    from torchvision import transforms

    pipeline = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()),
        ]
    )
    odd = crops[0][:201, 13:190]  # non-square, smaller than 224: upscaled then centre-cropped
    ours = crops_to_input(odd[None], 224)[0]
    reference = pipeline(Image.fromarray(np.ascontiguousarray(odd))).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_safetensors_conversion_round_trip(model, tmp_path, crops):
    path = save_sixdrepnet(
        model, tmp_path / "6DRepNet_300W_LP_AFLW2000.safetensors", source=RELEASED_FILENAME
    )
    meta = read_metadata(path)
    assert (
        meta["faithfulfaces.kind"] == "pose_estimator"
        and '"architecture": "RepVGG-B1g2"' in meta["faithfulfaces.config"]
    )
    again = load_sixdrepnet(path)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_tiny_config_round_trips_through_safetensors(tmp_path):
    config = tiny_sixdrepnet_config()
    tiny = random_sixdrepnet(1, config=config)
    again = load_sixdrepnet(save_sixdrepnet(tiny, tmp_path / "tiny.safetensors"))
    assert again.config == config
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), tiny(x), atol=0, rtol=0)


def test_convert_cli(tmp_path, crops, capsys):
    source = save_sixdrepnet(
        random_sixdrepnet(2, config=tiny_sixdrepnet_config(224)), tmp_path / "tiny.safetensors"
    )
    out = tmp_path / "out" / "tiny.onnx"
    assert convert_main([str(source), "--onnx", str(out)]) == 0  # safetensors source: only the ONNX is new
    assert capsys.readouterr().out == f"wrote {out}\n"
    a = load_pose_estimator(source, device="cpu").estimate(crops)
    b = load_pose_estimator(out, device="cpu").estimate(crops)
    np.testing.assert_allclose(a, b, atol=1e-2)
    assert convert_main([str(tmp_path / "absent.pth")]) == 1
    assert "error: 6DRepNet weight file" in capsys.readouterr().err


def test_folder_story_picks_the_backend(weights, onnx_file, tmp_path):
    folder = weights[0]
    assert find_pose_estimator_file(folder) == folder / RELEASED_FILENAME
    assert find_pose_estimator_file(folder, backend="onnx") == onnx_file
    assert isinstance(load_pose_estimator(folder, device="cpu"), SixDRepNetEstimator)
    assert isinstance(load_pose_estimator(folder, backend="onnx", device="cpu"), OnnxPoseEstimator)
    only_onnx = tmp_path / "only_onnx"
    only_onnx.mkdir()
    (only_onnx / "my_6drepnet.onnx").write_bytes(onnx_file.read_bytes())
    assert find_pose_estimator_file(only_onnx) == only_onnx / "my_6drepnet.onnx"


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(MissingModelError) as info:
        find_pose_estimator_file(tmp_path / "nowhere")
    message = str(info.value)
    assert f"Pose-estimator folder {tmp_path / 'nowhere'} does not exist" in message
    assert "6DRepNet_300W_LP_AFLW2000.safetensors or 6DRepNet_300W_LP_AFLW2000.pth" in message
    assert "thohemp/6DRepNet" in message and "never downloads" in message
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MissingModelError) as info:
        load_pose_estimator(tmp_path, backend="onnx")
    message = str(info.value)
    assert f"No 6DRepNet weights for backend 'onnx' in {tmp_path} (files there: ['notes.txt'])" in message
    assert "Expected 6DRepNet_300W_LP_AFLW2000.onnx" in message
    with pytest.raises(
        MissingModelError, match=r"6DRepNet weight file .*missing\.pth does not exist\. Place"
    ):
        load_sixdrepnet(tmp_path / "missing.pth")


class NotWeights:
    def __init__(self):
        self.layers = [1, 2, 3]


def test_pickle_that_is_not_a_state_dict(tmp_path):
    whole = tmp_path / "whole_model.pth"
    with open(whole, "wb") as fh:
        pickle.dump({"model": NotWeights()}, fh)
    with pytest.raises(CheckpointError) as info:
        load_sixdrepnet(whole)
    message = str(info.value)
    assert f"{whole} is not a plain state dict: it pickles Python code or objects" in message
    assert "FaithfulFaces never runs (loading it could execute anything)" in message and "save model.state_dict()" in message
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(
        CheckpointError, match=r"list\.pth holds list, not a state dict of tensors\. Expected"
    ):
        load_sixdrepnet(listed)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth cannot be read as a PyTorch weight file"):
        load_sixdrepnet(garbage)


def test_wrong_architecture(tmp_path, weights):
    tiny = tmp_path / "tiny.pth"
    torch.save(random_sixdrepnet(0, config=tiny_sixdrepnet_config()).state_dict(), tiny)
    with pytest.raises(CheckpointError) as info:
        load_sixdrepnet(tiny)
    message = str(info.value)
    assert "6DRepNet (RepVGG-B1g2) key 'layer1.1.rbr_reparam.weight' is missing (and " in message
    assert "does not hold a 6DRepNet with a RepVGG-B1g2 backbone in the released key layout" in message
    state = torch.load(weights[1], weights_only=True)
    state["linear_reg.weight"] = torch.zeros(3, 2048)
    bad = tmp_path / "bad_head.pth"
    torch.save(state, bad)
    with pytest.raises(
        CheckpointError, match=r"key 'linear_reg.weight' has shape \(3, 2048\), expected \(6, 2048\)"
    ):
        load_sixdrepnet(bad)
    resnet = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, resnet)
    with pytest.raises(CheckpointError, match=r"key 'layer0.rbr_reparam.weight' is missing"):
        load_sixdrepnet(resnet)


def test_wrong_kind_of_safetensors_and_onnx(tmp_path):
    other = save_checkpoint(
        tmp_path / "aligner.safetensors", {"w": torch.zeros(1)}, kind="aligner", format=1, config={}
    )
    with pytest.raises(
        CheckpointError, match="is a FaithfulFaces 'aligner' file, but a 'pose_estimator' file"
    ):
        load_sixdrepnet(other)
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), str(foreign), dynamo=False)
    with pytest.raises(CheckpointError, match=r"is not a FaithfulFaces 6DRepNet ONNX export \(kind None"):
        OnnxPoseEstimator(foreign, device="cpu")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="is not a loadable ONNX model"):
        OnnxPoseEstimator(broken, device="cpu")


def test_onnx_providers():
    import onnxruntime as ort

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
    assert onnx_providers("auto") == (
        ["CUDAExecutionProvider", "CPUExecutionProvider"] if has_cuda else ["CPUExecutionProvider"]
    )
    if not has_cuda:
        with pytest.raises(MissingDependencyError, match="needs onnxruntime-gpu and a visible NVIDIA GPU"):
            onnx_providers("cuda")


def test_bf16_precision_on_torch_files_only(weights, onnx_file):
    """On real faces bf16 moves random-weight angles by about 1° on average (6DRepNet's own error is ~4°).

    bench_pose.py measures 0.2–1.1° mean, 0.7–6.3° max over weight seeds; noise images move
    further (up to 13°), so the crops are the photographs' faces.
    """
    from faithfulfaces_core.tiny.photos import photo_face_crops

    folder, crops = weights[0], photo_face_crops()
    fp32 = load_pose_estimator(folder, device="cpu")
    bf16 = load_pose_estimator(folder, device="cpu", precision="bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    error = angle_difference(bf16.estimate(crops), fp32.estimate(crops))
    assert len(crops) >= 8 and error.mean() < 1.5 and error.max() < 10.0, error
    with pytest.raises(FaithfulFacesError, match=r"6DRepNet_300W_LP_AFLW2000\.onnx runs on ONNX Runtime in the "
                                                 r"precision it was exported in; bf16 is for the torch files"):
        load_pose_estimator(folder, backend="onnx", precision="bf16")
    with pytest.raises(FaithfulFacesError, match="Unknown pose-estimator precision 'fp16': use one of fp32, bf16"):
        load_pose_estimator(folder, precision="fp16")
