"""Training from a Dataset or DataLoader, and on-device augmentation: the same batches as the tensor
path, exact resume after a kill mid-epoch, crops and flips that can be seen on known images."""
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from advlab import ThreatModel
from advlab.errors import AdvlabError, InputError
from advlab.training import PGDAT, Standard, Trainer, TrainConfig
from advlab.training.augment import Augment, build_augment

TH = ThreatModel("linf", 0.1)


def images(n=192, seed=0):
    """Images whose class is the brighter half (left or right; top or bottom)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.rand(n, 1, 8, 8, generator=g)
    for c, (rows, cols) in enumerate([(slice(None), slice(0, 4)), (slice(None), slice(4, 8)),
                                      (slice(0, 4), slice(None)), (slice(4, 8), slice(None))]):
        x[y == c, :, rows, cols] += 0.6
    return x.clamp(0, 1), y


def convnet(seed=0, dropout=0.2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(dropout), nn.Flatten(),
                         nn.Linear(256, 4))


def same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


class Pairs(Dataset):
    """A user's map-style Dataset returning (image, int label), as torchvision datasets do."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, seed=3, augment={"crop": 2, "flip": True})


def test_dataset_and_loader_train_exactly_as_tensors():
    x, y = images()
    ref = convnet()
    Trainer(ref, Standard(), CFG).fit(x, y)
    for data in (TensorDataset(x, y), Pairs(x, y), DataLoader(Pairs(x, y), batch_size=7, shuffle=True)):
        model = convnet()
        Trainer(model, Standard(), CFG).fit(data)
        assert same(model, ref), type(data).__name__


def test_loader_with_augmentation_resumes_bit_identically_after_a_kill(tmp_path):
    x, y = images()
    cfg = replace(CFG, epochs=3, checkpoint_every=2)
    loader = DataLoader(Pairs(x, y), batch_size=32)
    full = convnet()
    Trainer(full, PGDAT(TH, steps=2), cfg).fit(loader, x_val=TensorDataset(x[:64], y[:64]))

    def die(step):
        if step == 9:  # epoch 2 of 3 (6 steps per epoch), after the mid-epoch checkpoint at step 8
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.safetensors"
    with pytest.raises(KeyboardInterrupt):
        Trainer(convnet(), PGDAT(TH, steps=2), cfg, checkpoint_path=ckpt, step_hook=die).fit(
            loader, x_val=TensorDataset(x[:64], y[:64]))
    resumed = convnet(seed=99)
    torch.manual_seed(777)  # a fresh process's RNG
    res = Trainer(resumed, PGDAT(TH, steps=2), cfg, checkpoint_path=ckpt).fit(
        loader, x_val=TensorDataset(x[:64], y[:64]), resume=True)
    assert same(resumed, full) and len(res.history) == 3


def test_augmentation_changes_training_and_off_means_unchanged():
    x, y = images()
    plain, aug = convnet(), convnet()
    Trainer(plain, Standard(), replace(CFG, augment={})).fit(x, y)
    Trainer(aug, Standard(), CFG).fit(x, y)
    off = convnet()
    Trainer(off, Standard(), replace(CFG, augment={"crop": 0, "flip": False})).fit(x, y)
    assert not same(plain, aug) and same(plain, off)


def test_flip_and_crop_are_visible_on_known_images():
    n = 256
    ramp = torch.arange(16.0).repeat(4, 1) + 1  # 4 x 16 image, columns 1..16: every pixel says where it is
    x = ramp.expand(n, 3, 4, 16).clone()
    flipped = Augment(flip=True)(x, seed=0)
    mirrored = (flipped == x.flip(3)).all(dim=(1, 2, 3))
    kept = (flipped == x).all(dim=(1, 2, 3))
    assert bool((mirrored | kept).all()) and 0.35 < float(mirrored.float().mean()) < 0.65
    assert torch.equal(Augment(flip=True)(x, seed=0), flipped) and not torch.equal(Augment(flip=True)(x, seed=1),
                                                                                   flipped)
    cropped = Augment(crop=2)(x, seed=5)
    assert cropped.shape == x.shape
    shifts = set()
    for img in cropped:  # each crop is the image shifted by (dy, dx) in [-2, 2]^2 with zero padding
        row = img[0, 2] if img[0, 2].any() else img[0, 1]
        nz = row[row > 0]
        dx = int(row.nonzero()[0]) - int(nz[0] - 1)
        shifts.add(dx)
        expect = torch.zeros(16)
        src = torch.arange(16) - dx
        valid = (src >= 0) & (src < 16)
        expect[valid] = ramp[0][src[valid]]
        assert torch.equal(row, expect)
        zero_rows = int((~img[0].any(dim=1)).sum())
        assert zero_rows <= 2 and torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])  # one crop per image
    assert shifts == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize("spec, message", [({"crop": -1}, "crop"), ({"crop": 1.5}, "crop"), ({"flip": "yes"}, "flip"),
                                           ({"rotate": 10}, "unknown augment")])
def test_bad_augment_settings_are_named(spec, message):
    with pytest.raises(AdvlabError, match=message):
        build_augment(spec)


def test_bad_training_data_is_a_one_line_error():
    x, y = images(32)

    class Stream(IterableDataset):
        def __iter__(self):
            yield x[:4], y[:4]

    class Singles(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"image": x[i]}

    trainer = Trainer(convnet(), Standard(), TrainConfig(epochs=1, batch_size=4))
    with pytest.raises(InputError, match="IterableDataset"):
        trainer.fit(Stream())
    with pytest.raises(InputError, match="pass y only with tensor x"):
        trainer.fit(TensorDataset(x, y), y)
    with pytest.raises(InputError, match="labels y are missing"):
        trainer.fit(x)
    with pytest.raises(InputError, match="not an \\(x, y\\) pair"):
        trainer.fit(Singles())
    with pytest.raises(AdvlabError, match="image batches"):
        Trainer(convnet(), Standard(), TrainConfig(epochs=1, batch_size=4, augment={"flip": True})).fit(
            x.flatten(1), y)
