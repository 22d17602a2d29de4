"""Token-labelling training for GLNet ``*_tklb`` (the official GLMix ``main_tklb.py`` protocol).

The label format is TokenLabeling's (``generate_label.py``, e.g. its released NFNet-F6 ``label_top5_train_nfnet``):
one file per training image, ``<label dir>/<class folder>/<image stem>.pt``, holding a ``[2, k, H, W]`` tensor (the
top-k scores and their class indices at each position of the teacher's output map; k = 5, H = W = 15 there).

Per image (:class:`TokenLabelTransform`, TokenLabeling's order): horizontal flip of image and map, RandAugment whose
geometric ops (Rotate, ShearX/Y, TranslateX/YRel) move the map too (nearest sampling, scores filled with 0, indices
with the nearest edge), a random resized crop whose box is recorded, normalisation, random erasing (image only).
As officially, the sample's target is one ``[3, k, H, W]`` tensor: the map plus a slice holding the crop box
(``[2, 0, 0, :4]`` = top/H, left/W, height/H, width/W) and the class (``[2, 0, 0, 5]``); timm's Mixup / CutMix are
off (``main_tklb.py`` sets them to 0).

Per batch (:class:`TokenLabelLoss`): the top-k scores scattered into a dense ``[C, H, W]`` map, ``roi_align`` over the
crop box to ``label_size x label_size`` token labels plus a 1x1 whole-crop label, softmax over classes, label
smoothing as ``on * p + off``; the loss is ``cls_weight * CE(logits, crop label) + dense_weight * CE(token logits,
token labels)`` with the crop label mixed by the in-model CutMix's area. The official code hands the box to
``roi_align`` as ``(top, left, bottom, right)`` in ``(x1, y1, x2, y2)`` order; that is kept, since the released
models were trained with it.

In the model (:class:`TokenLabelModel`, training only): CutMix inside the network, after the stem: a box on the final
(stride-32) token grid, drawn from Beta(1, 1) as in ``glnet_tklb.py``, is pasted at stride 4 from the batch reversed,
and the token logits of that box are swapped back afterwards, so every token logit faces its own image's label.
"""
import math
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp
from timm.data.transforms_factory import rand_augment_transform
from timm.utils.misc import natural_key
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.ops import roi_align
from torchvision.transforms import functional as TF

# ---------------------------------------------------------------------------------------------------------------
# Label maps and the geometric RandAugment ops on them


def read_label_map(path: str) -> torch.Tensor:
    """One TokenLabeling label file as float ``[2, k, H, W]`` (scores, class indices); a clear error otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'token label file not found: {path}')
    label = torch.load(path, map_location='cpu', weights_only=True)
    if not torch.is_tensor(label) or label.ndim != 4 or label.shape[0] != 2:
        shape = tuple(label.shape) if torch.is_tensor(label) else type(label).__name__
        raise ValueError(f'{path}: a token label file holds a [2, k, H, W] tensor (top-k scores, indices), got {shape}')
    return label.float()


def _affine_label(label: torch.Tensor, matrix: tuple[float, ...]) -> torch.Tensor:
    """PIL's affine ``(a, b, c, d, e, f)`` (output (x, y) reads input (a x + b y + c, d x + e y + f)) on the map's
    (rows, cols), nearest sampling: scores outside become 0, indices take the nearest edge (TokenLabeling's)."""
    a, b, c, d, e, f = matrix
    m = [[1, 0, 0, 0], [0, a, b, c], [0, d, e, f]]
    value = ndimage.affine_transform(label[0].numpy(), matrix=m, order=0, mode='constant')
    index = ndimage.affine_transform(label[1].numpy(), matrix=m, order=0, mode='nearest')
    return torch.from_numpy(np.stack([value, index]))


def _rotate_label(label: torch.Tensor, degrees: float) -> torch.Tensor:
    h, w = label.shape[2:]  # TokenLabeling names them (w, h); its maps are square
    cx, cy = h / 2.0, w / 2.0
    angle = math.radians(degrees)
    a, b, d, e = round(math.cos(angle), 15), round(math.sin(angle), 15), round(-math.sin(angle), 15), round(
        math.cos(angle), 15)
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return _affine_label(label, (a, b, c, d, e, f))


# RandAugment op name -> what it does to the label map (the photometric ops leave it alone).
LABEL_OPS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    'Rotate': _rotate_label,
    'ShearX': lambda label, factor: _affine_label(label, (1, 0, 0, factor, 1, 0)),
    'ShearY': lambda label, factor: _affine_label(label, (1, factor, 0, 0, 1, 0)),
    'TranslateXRel': lambda label, pct: _affine_label(label, (1, 0, 0, 0, 1, pct * label.shape[3])),
    'TranslateYRel': lambda label, pct: _affine_label(label, (1, 0, pct * label.shape[2], 0, 1, 0)),
}


class LabelRandAugment:
    """timm's RandAugment on the image; each applied geometric op moves the label map by the same amount.

    timm's ops draw their magnitude and sign inside ``__call__``; each op's function is wrapped once to record the
    arguments it was called with, so the label follows exactly the transform the image got.
    """

    def __init__(self, config: str, hparams: dict[str, Any]):
        self.ra = rand_augment_transform(config, hparams)
        for op in self.ra.ops:
            if op.name in ('TranslateX', 'TranslateY'):
                raise ValueError(f'RandAugment op {op.name} has no label counterpart (TokenLabeling drops it)')
            op.aug_fn = self._recording(op, op.aug_fn)

    @staticmethod
    def _recording(op: Any, fn: Callable) -> Callable:
        def call(img: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
            op.applied_args = args
            return fn(img, *args, **kwargs)
        return call

    def __call__(self, img: Image.Image, label: torch.Tensor) -> tuple[Image.Image, torch.Tensor]:
        ra = self.ra
        ops = np.random.choice(ra.ops, ra.num_layers, replace=ra.choice_weights is None, p=ra.choice_weights)
        for op in ops:
            op.applied_args = None
            img = op(img)
            if op.applied_args is not None and op.name in LABEL_OPS:
                label = LABEL_OPS[op.name](label, *op.applied_args)
        return img, label


# ---------------------------------------------------------------------------------------------------------------
# Dataset and per-image transform


class TokenLabelTransform:
    """The training transform of image and label map (see the module docstring); returns (image tensor, the
    ``[3, k, H, W]`` label-with-box target, its class still to be written)."""

    def __init__(self, img_size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5, vflip: float = 0.,
                 color_jitter: float | None = 0.4, auto_augment: str | None = None, interpolation: str = 'random',
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), re_prob: float = 0., re_mode: str = 'const',
                 re_count: int = 1):
        self.hflip, self.vflip = hflip, vflip
        self.augment = self.jitter = None
        if auto_augment:
            if not auto_augment.startswith('rand'):
                raise ValueError(f'token labelling augments with RandAugment (rand-...), got {auto_augment!r}')
            hparams = dict(translate_const=int(img_size * 0.45),
                           img_mean=tuple(min(255, round(255 * x)) for x in mean))
            if interpolation != 'random':
                hparams['interpolation'] = str_to_pil_interp(interpolation)
            self.augment = LabelRandAugment(auto_augment, hparams)
        elif color_jitter:  # image only, as TokenLabeling when RandAugment is off
            self.jitter = transforms.ColorJitter(*(float(color_jitter),) * 3)
        self.crop = RandomResizedCropAndInterpolation(img_size, scale=scale, ratio=ratio, interpolation=interpolation)
        self.mean, self.std = mean, std
        self.erase = RandomErasing(re_prob, mode=re_mode, max_count=re_count, device='cpu') if re_prob > 0 else None

    def __call__(self, img: Image.Image, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hflip and random.random() < self.hflip:
            img, label = TF.hflip(img), label.flip(3)
        if self.vflip and random.random() < self.vflip:
            img, label = TF.vflip(img), label.flip(2)
        if self.augment is not None:
            img, label = self.augment(img, label)
        elif self.jitter is not None:
            img = self.jitter(img)
        i, j, h, w = self.crop.get_params(img, self.crop.scale, self.crop.ratio)
        box = torch.zeros_like(label[:1])
        box[0, 0, 0, :4] = torch.tensor([i / img.size[1], j / img.size[0], h / img.size[1], w / img.size[0]])
        interp = self.crop.interpolation
        interp = random.choice(interp) if isinstance(interp, (tuple, list)) else interp
        img = TF.resized_crop(img, i, j, h, w, list(self.crop.size), interp)
        x = TF.normalize(TF.to_tensor(img), self.mean, self.std)
        if self.erase is not None:
            x = self.erase(x)
        return x, torch.cat([label, box])


class TokenLabelDataset(ImageFolder):
    """An ImageNet-style training folder with TokenLabeling label files under ``label_root`` (same class folders,
    the image's stem + ``.pt``). ``transform`` (settable later, as train.py's loaders do) takes (image, label map)
    -> (tensor, ``[3, k, H, W]`` target)."""

    def __init__(self, root: str, label_root: str, transform: Callable | None = None):
        super().__init__(root, transform=transform)
        if not os.path.isdir(label_root):
            raise FileNotFoundError(f'token label folder not found: {label_root}')
        self.label_root = label_root
        read_label_map(self.label_path(0))  # fail at start, not in a worker, when the layout is not the official one

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Class folders in natural order, as timm's folder reader (the validation set) and TokenLabeling number
        them (torchvision's plain sort would differ for names like class2 / class10)."""
        classes = sorted((e.name for e in os.scandir(directory) if e.is_dir()), key=natural_key)
        if not classes:
            raise FileNotFoundError(f'no class folders in {directory}')
        return classes, {c: i for i, c in enumerate(classes)}

    def label_path(self, index: int) -> str:
        path = self.samples[index][0]
        folder, name = os.path.split(path)
        return os.path.join(self.label_root, os.path.basename(folder), os.path.splitext(name)[0] + '.pt')

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, target = self.samples[index]
        img = self.loader(path)
        label = read_label_map(self.label_path(index))
        if self.transform is None:
            raise RuntimeError('TokenLabelDataset needs a transform (TokenLabelTransform) to build its targets')
        x, label = self.transform(img, label)
        label[2, 0, 0, 5] = target
        return x, label


# ---------------------------------------------------------------------------------------------------------------
# Targets and loss


def token_label_targets(labels: torch.Tensor, num_classes: int, label_size: int, smoothing: float = 0.
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 3, k, H, W]`` label-with-box targets -> (crop labels ``[B, C]``, token labels ``[B, S*S, C]``)."""
    if labels.ndim != 5 or labels.shape[1] != 3:
        raise ValueError(f'expected token-label targets [B, 3, k, H, W], got {tuple(labels.shape)}')
    off = smoothing / num_classes
    on = 1. - smoothing + off
    b = labels.shape[0]
    index = labels[:, 1].long()
    if index.min() < 0 or index.max() >= num_classes:
        raise ValueError(f'token labels name classes outside 0..{num_classes - 1}')
    dense = torch.zeros(b, num_classes, *labels.shape[-2:], device=labels.device).scatter_(1, index, labels[:, 0])
    box = labels[:, 2, 0, 0, :4].clone()
    box[:, 2:] += box[:, :2]
    rois = torch.cat([torch.arange(b, device=labels.device, dtype=box.dtype)[:, None],
                      box * dense.shape[3] - 0.5], 1)
    tokens = roi_align(dense, rois, output_size=(label_size, label_size)).flatten(2)
    crop = roi_align(dense, rois, output_size=(1, 1)).flatten(2)
    probs = F.softmax(torch.cat([crop, tokens], 2), dim=1) * on + off
    return probs[:, :, 0], probs[:, :, 1:].transpose(1, 2)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class TokenLabelLoss(nn.Module):
    """The official ``TokenLabelCrossEntropy`` on (logits, token logits, CutMix box) from :class:`TokenLabelModel`."""

    def __init__(self, num_classes: int, label_size: int = 7, smoothing: float = 0.1, dense_weight: float = 0.5,
                 cls_weight: float = 1.0):
        super().__init__()
        if dense_weight + cls_weight <= 0:
            raise ValueError('dense_weight + cls_weight must be > 0')
        self.num_classes, self.label_size, self.smoothing = num_classes, label_size, smoothing
        self.dense_weight, self.cls_weight = dense_weight, cls_weight

    def forward(self, output: tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]],
                labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, tuple) or len(output) != 3:
            raise TypeError('TokenLabelLoss takes the training output of TokenLabelModel (logits, token logits, box)')
        logits, token_logits, (r1, c1, r2, c2) = output
        num_tokens = token_logits.shape[1]
        if num_tokens != self.label_size ** 2:
            raise ValueError(f'the model gives {num_tokens} tokens, the labels {self.label_size}x{self.label_size}: '
                             f'set --token-label-size to the final grid side (input size / 32)')
        target_cls, target_tokens = token_label_targets(labels, self.num_classes, self.label_size, self.smoothing)
        lam = 1 - (r2 - r1) * (c2 - c1) / num_tokens
        if lam < 1:
            target_cls = lam * target_cls + (1 - lam) * target_cls.flip(0)
        loss_cls = _soft_ce(logits, target_cls)
        loss_tokens = _soft_ce(token_logits.reshape(-1, self.num_classes), target_tokens.reshape(-1, self.num_classes))
        return self.cls_weight * loss_cls + self.dense_weight * loss_tokens


# ---------------------------------------------------------------------------------------------------------------
# The in-model CutMix


def cutmix_box(rows: int, cols: int, lam: float, rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """A CutMix box (r1, c1, r2, c2) on a rows x cols grid covering about 1 - lam of it (``glnet_tklb.rand_bbox``)."""
    randint = rng.integers if rng is not None else np.random.randint
    cut = math.sqrt(1. - lam)
    cut_r, cut_c = int(rows * cut), int(cols * cut)
    cr, cc = int(randint(rows)), int(randint(cols))
    return (int(np.clip(cr - cut_r // 2, 0, rows)), int(np.clip(cc - cut_c // 2, 0, cols)),
            int(np.clip(cr + cut_r // 2, 0, rows)), int(np.clip(cc + cut_c // 2, 0, cols)))


class TokenLabelModel(nn.Module):
    """Wraps a GLNet ``*_tklb`` model for token-labelling training (no parameters of its own; the model's state dict
    is unchanged). Training: (logits, token logits ``[B, N, C]``, CutMix box on the final grid); eval: the model's
    own output (logits + 0.5 * the token logits' max, as officially)."""

    def __init__(self, model: nn.Module, beta: float = 1.0, rng: np.random.Generator | None = None):
        super().__init__()
        head = getattr(model, 'head', None)
        if getattr(head, 'aux_head', None) is None or not hasattr(model, 'stem'):
            raise ValueError('token labelling needs a model with a token-label head (the glnet_*_tklb variants)')
        self.model = model
        self.beta = beta
        self.rng = rng
        self.stride = 8  # final-stage stride / stem stride = 32 / 4, the official tklb_pooling_scale

    def forward(self, x: torch.Tensor):
        model = self.model
        if not self.training:
            return model(x)
        x = model._stem(x)
        rows, cols = x.shape[2] // self.stride, x.shape[3] // self.stride
        beta = self.rng.beta if self.rng is not None else np.random.beta
        lam = float(beta(self.beta, self.beta))
        r1, c1, r2, c2 = cutmix_box(rows, cols, lam, self.rng)
        s = self.stride
        x = x.clone()
        x[:, :, s * r1:s * r2, s * c1:s * c2] = x.flip(0)[:, :, s * r1:s * r2, s * c1:s * c2]
        x = model.norm(model.stages(x))
        if x.shape[2:] != (rows, cols):
            raise ValueError(f'the final grid {tuple(x.shape[2:])} is not the stem map / 8 ({rows}, {cols}): use an '
                             'input size divisible by 32')
        logits = model.head.fc(model.head.drop(x.mean((2, 3))))
        tokens = model.head.aux_head(x.permute(0, 2, 3, 1))  # [B, rows, cols, C]
        tokens = tokens.clone()
        tokens[:, r1:r2, c1:c2] = tokens.flip(0)[:, r1:r2, c1:c2]
        return logits, tokens.flatten(1, 2), (r1, c1, r2, c2)
