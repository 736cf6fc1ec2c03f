"""VBVR-Bench layout: reading samples and writing generated videos, on a data set made from our own tasks."""
import pytest
import torch

from cos.errors import InputError
from cos.tasks import make_instance
from cos.tasks.vbvr import export_tasks, output_path, read_samples, read_video, scorer_status, write_video


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("vbvr")
    insts = [make_instance(t, s, 5, sp) for t in ("maze", "pattern") for s in (0, 1) for sp in ("id", "ood")]
    export_tasks(root, insts, 32, 48)
    return root, insts


def test_read_samples_round_trip(dataset):
    root, insts = dataset
    samples = read_samples(root)
    assert len(samples) == len(insts)
    s = samples[0]
    assert s.split in ("In-Domain_50", "Out-of-Domain_50") and s.first_frame.shape == (3, 32, 48)
    inst = next(i for i in insts if i.task == s.task and i.prompt == s.prompt)
    gt = read_video(s.ground_truth)
    assert gt.shape == (5, 3, 32, 48)
    assert (gt - inst.render(32, 48)).abs().max() < 2 / 255 + 1e-6   # lossless within rounding
    assert inst.score(gt) == pytest.approx(1.0, abs=1e-3)


def test_write_generated_layout(dataset, tmp_path):
    root, _ = dataset
    s = read_samples(root)[0]
    p = write_video(output_path(tmp_path, s), torch.rand(5, 3, 17, 31))
    assert p == tmp_path / s.split / s.task / f"{int(s.idx):05d}.mp4" and p.exists()
    assert read_video(p).shape == (5, 3, 18, 32)   # odd sizes padded to even for H.264


def test_errors_and_scorer_status(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_samples(tmp_path / "none")
    (tmp_path / "In-Domain_50" / "maze" / "00000").mkdir(parents=True)
    with pytest.raises(InputError, match="prompt.txt: missing"):
        read_samples(tmp_path)
    status = scorer_status()
    assert status is None or status.startswith("scorer not installed")
