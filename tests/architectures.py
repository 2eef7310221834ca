"""The networks users bring, in plain PyTorch, written from torchvision's published structure
(torchvision itself cannot be imported in CI): ResNet-18/50, MobileNetV2, MobileNetV3-Large,
EfficientNet-B0, SqueezeNet 1.1, VGG-11-BN, LR-ASPP, DeepLabV3, FCN and ShuffleNetV2 (channel
split and shuffle). Widths and depths are
cut down so that the NumPy reference runs them in a second; the blocks, their order and their
ops (BatchNorm, depthwise and dilated convs, SE blocks, hardswish/SiLU/ReLU6, bilinear resizes,
global pools) are torchvision's. On the H200, scripts/torchvision_check.py runs the real ones.
More networks are in more_architectures.py and dense_architectures.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin, cout, k=3, stride=1, groups=1, dilation=1, act=nn.ReLU):
    """Conv (no bias), BatchNorm, activation: torchvision's Conv2dNormActivation."""
    pad = (k - 1) // 2 * dilation
    layers = [nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


# ------------------------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout
                           else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride, dilation=1):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout
                           else None)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """`bottleneck`: ResNet-50's blocks; `dilate`: FCN's backbone (the last two stages keep
    their resolution and dilate instead); `classes` None: the features only."""

    def __init__(self, bottleneck=False, blocks=(2, 2, 2, 2), widths=(8, 16, 32, 64),
                 classes=10, dilate=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, cin, dilation = [], widths[0], 1
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            if dilate and i >= 2:
                dilation, stride = dilation * 2, 1
            for j in range(n):
                if bottleneck:
                    stages.append(Bottleneck(cin, w, stride if j == 0 else 1, dilation))
                    cin = w * 4
                else:
                    stages.append(BasicBlock(cin, w, stride if j == 0 else 1))
                    cin = w
        self.layers = nn.Sequential(*stages)
        self.channels = cin
        self.fc = nn.Linear(cin, classes) if classes else None

    def forward(self, x):
        x = self.layers(self.stem(x))
        if self.fc is None:
            return x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ------------------------------------------------------------------------------ MobileNetV2
class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [cbr(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [cbr(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    # (expand, out, repeats, stride), torchvision's table with widths / 4
    CONFIG = [(1, 4, 1, 1), (6, 6, 2, 2), (6, 8, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1),
              (6, 40, 2, 2), (6, 80, 1, 1)]

    def __init__(self, classes=10):
        super().__init__()
        layers, cin = [cbr(3, 8, 3, 2, act=nn.ReLU6)], 8
        for t, c, n, s in self.CONFIG:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(cbr(cin, 320, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(320, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ------------------------------------------------------------------- SE, MobileNetV3, EfficientNet
class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: pool, fc1, activation, fc2, gate, scale."""

    def __init__(self, channels, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class MBConv(nn.Module):
    """MobileNetV3's InvertedResidual (hardswish/ReLU, SE with hardsigmoid) or, with `silu`,
    EfficientNet's MBConv (SiLU, SE with sigmoid)."""

    def __init__(self, cin, k, expanded, cout, se, act, stride, dilation=1, silu=False):
        super().__init__()
        layers = [] if expanded == cin else [cbr(cin, expanded, 1, act=act)]
        layers.append(cbr(expanded, expanded, k, 1 if dilation > 1 else stride, groups=expanded,
                          dilation=dilation, act=act))
        if se:
            squeeze = max(1, cin // 4) if silu else max(8, expanded // 4)
            layers.append(SqueezeExcitation(expanded, squeeze, nn.SiLU if silu else nn.ReLU,
                                            nn.Sigmoid if silu else nn.Hardsigmoid))
        layers.append(cbr(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    """MobileNetV3-Large's block table (in, kernel, expanded, out, SE, hardswish, stride) with
    widths / 4; `dilated` makes the last stage dilated (the DeepLabV3/LR-ASPP backbone), and
    `classes` None returns (stride-8 features, last features)."""
    CONFIG = [(4, 3, 4, 4, False, False, 1), (4, 3, 16, 6, False, False, 2),
              (6, 3, 18, 6, False, False, 1), (6, 5, 18, 10, True, False, 2),
              (10, 5, 30, 10, True, False, 1), (10, 3, 60, 20, False, True, 2),
              (20, 3, 50, 20, False, True, 1), (20, 3, 120, 28, True, True, 1),
              (28, 5, 168, 40, True, True, 2), (40, 5, 240, 40, True, True, 1)]

    def __init__(self, classes=10, dilated=False):
        super().__init__()
        layers = [cbr(3, 4, 3, 2, act=nn.Hardswish)]
        for i, (cin, k, e, cout, se, hs, s) in enumerate(self.CONFIG):
            dilation = 2 if dilated and i >= 8 else 1
            layers.append(MBConv(cin, k, e, cout, se, nn.Hardswish if hs else nn.ReLU, s,
                                 dilation))
        layers.append(cbr(40, 240, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classes = classes
        if classes:
            self.classifier = nn.Sequential(nn.Linear(240, 320), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(320, classes))

    def forward(self, x):
        if not self.classes:
            low = self.features[:5](x)                        # stride 8
            return low, self.features[5:](low)
        x = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(x)


class EfficientNetB0(nn.Module):
    # (expand ratio, kernel, stride, in, out, layers), torchvision's B0 table with widths / 4
    CONFIG = [(1, 3, 1, 8, 4, 1), (6, 3, 2, 4, 6, 2), (6, 5, 2, 6, 10, 2), (6, 3, 2, 10, 20, 2),
              (6, 5, 1, 20, 28, 1), (6, 5, 2, 28, 48, 2), (6, 3, 1, 48, 80, 1)]

    def __init__(self, classes=10):
        super().__init__()
        layers = [cbr(3, 8, 3, 2, act=nn.SiLU)]
        for t, k, s, cin, cout, n in self.CONFIG:
            for i in range(n):
                c = cin if i == 0 else cout
                layers.append(MBConv(c, k, c * t, cout, True, nn.SiLU, s if i == 0 else 1,
                                     silu=True))
        layers.append(cbr(80, 320, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(320, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ----------------------------------------------------------------------- SqueezeNet 1.1, VGG
class Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1, self.expand3x3 = nn.Conv2d(squeeze, e1, 1), nn.Conv2d(squeeze, e3, 3, 1, 1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2), nn.ReLU(), pool, Fire(16, 4, 16, 16), Fire(32, 4, 16, 16),
            pool, Fire(32, 8, 32, 32), Fire(64, 8, 32, 32), pool, Fire(64, 12, 48, 48),
            Fire(96, 12, 48, 48), Fire(96, 16, 64, 64), Fire(128, 16, 64, 64))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(128, classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class VGG11BN(nn.Module):
    CONFIG = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]    # torchvision's / 8

    def __init__(self, classes=10):
        super().__init__()
        layers, cin = [], 3
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(256, 256), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(256, classes))

    def forward(self, x):                      # 224 x 224: the features are already 7 x 7
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 7), 1))


# ------------------------------------------------------------------------------ segmentation
class LRASPP(nn.Module):
    """lraspp_mobilenet_v3_large: the stride-8 and last features of a dilated MobileNetV3,
    LR-ASPP's head (a gated 1x1 branch, upsampled and added to a classifier of the low
    features), resized back to the input."""

    def __init__(self, classes=5):
        super().__init__()
        self.backbone = MobileNetV3(classes=None, dilated=True)
        self.cbr = cbr(240, 32, 1)
        self.scale = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(240, 32, 1, bias=False),
                                   nn.Sigmoid())
        self.low_classifier = nn.Conv2d(10, classes, 1)
        self.high_classifier = nn.Conv2d(32, classes, 1)

    def forward(self, x):
        low, high = self.backbone(x)
        y = self.cbr(high) * self.scale(high)
        y = F.interpolate(y, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.low_classifier(low) + self.high_classifier(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, cin, rates=(12, 24, 36), cout=32):
        super().__init__()
        self.branches = nn.ModuleList([cbr(cin, cout, 1)] + [cbr(cin, cout, 3, dilation=r)
                                                             for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), cbr(cin, cout, 1))
        self.project = nn.Sequential(cbr(cout * (len(rates) + 2), cout, 1), nn.Dropout(0.5))

    def forward(self, x):
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear",
                               align_corners=False)
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], 1))


class DeepLabV3(nn.Module):
    """deeplabv3_mobilenet_v3_large: a dilated MobileNetV3, ASPP, 3x3 and 1x1 convs, resized
    back to the input."""

    def __init__(self, classes=5):
        super().__init__()
        self.backbone = MobileNetV3(classes=None, dilated=True)
        self.head = nn.Sequential(ASPP(240), cbr(32, 32, 3), nn.Conv2d(32, classes, 1))

    def forward(self, x):
        y = self.head(self.backbone(x)[1])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FCN(nn.Module):
    """fcn_resnet50: a dilated ResNet-50 (stride 8), FCNHead, resized back to the input."""

    def __init__(self, classes=5):
        super().__init__()
        self.backbone = ResNet(True, (1, 2, 2, 1), (4, 8, 16, 32), classes=None, dilate=True)
        c = self.backbone.channels
        self.head = nn.Sequential(cbr(c, c // 4, 3), nn.Dropout(0.1), nn.Conv2d(c // 4, classes, 1))

    def forward(self, x):
        return F.interpolate(self.head(self.backbone(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


# ------------------------------------------------------------------------------ ShuffleNetV2
def channel_shuffle(x, groups):
    """torchvision's: view as (N, G, C / G, H, W), swap the group axes, flatten back."""
    n, c, h, w = x.size()
    x = torch.transpose(x.view(n, groups, c // groups, h, w), 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual: stride 1 splits the channels in two (chunk)
    and transforms one half; stride 2 transforms both copies; then concat and shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(cbr(cin, cin, 3, stride, groups=cin, act=None),
                                         cbr(cin, half, 1))
        self.branch2 = nn.Sequential(cbr(cin if stride > 1 else half, half, 1),
                                     cbr(half, half, 3, stride, groups=half, act=None),
                                     cbr(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, widths=(12, 24, 48, 96), repeats=(2, 2, 1), classes=10):
        super().__init__()
        self.conv1 = cbr(3, widths[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, cin = [], widths[0]
        for cout, n in zip(widths[1:], repeats):
            stages += [ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1)
                                                      for _ in range(n - 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.conv5 = cbr(cin, 128, 1)
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


class LayerNorm2d(nn.LayerNorm):
    """torchvision's: a LayerNorm over the channels of each pixel, through channels-last."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7x7, then channels-last LayerNorm, Linear, GELU,
    Linear, the permute back, a layer scale per channel and the residual add (stochastic depth
    is the identity in eval)."""

    def __init__(self, dim, layer_scale=1e-6):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),
            Permute((0, 2, 3, 1)), nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim),
            nn.GELU(), nn.Linear(4 * dim, dim), Permute((0, 3, 1, 2)))
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)

    def forward(self, x):
        result = self.layer_scale * self.block(x)
        result += x
        return result


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class ConvNeXt(nn.Module):
    """torchvision's ConvNeXt (tiny: widths 96..768, depths 3, 3, 9, 3), cut down: a 4x4/4 stem
    with a LayerNorm2d, stages of CNBlocks with LayerNorm2d + 2x2/2 conv downsampling between
    them, global average pool, LayerNorm2d, flatten, linear. The layer scale starts at 0.5, not
    torchvision's 1e-6, so that the blocks matter in the comparison."""

    def __init__(self, widths=(12, 24, 48, 96), depths=(1, 1, 2, 1), classes=10):
        super().__init__()
        layers = [nn.Conv2d(3, widths[0], 4, stride=4), LayerNorm2d(widths[0], eps=1e-6)]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            layers += [CNBlock(width, 0.5) for _ in range(depth)]
            if i + 1 < len(widths):
                layers += [LayerNorm2d(width, eps=1e-6),
                           nn.Conv2d(width, widths[i + 1], 2, stride=2)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(widths[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(widths[-1], classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


# name -> (constructor, input C x H x W)
ARCHITECTURES = {
    "resnet18": (lambda: ResNet(), (3, 64, 64)),
    "resnet50": (lambda: ResNet(True, (1, 2, 2, 1), (4, 8, 16, 32)), (3, 64, 64)),
    "mobilenet_v2": (MobileNetV2, (3, 64, 64)),
    "mobilenet_v3_large": (MobileNetV3, (3, 64, 64)),
    "efficientnet_b0": (EfficientNetB0, (3, 64, 64)),
    "squeezenet1_1": (SqueezeNet11, (3, 64, 64)),
    "vgg11_bn": (VGG11BN, (3, 224, 224)),
    "lraspp_mobilenet_v3_large": (LRASPP, (3, 64, 48)),
    "deeplabv3_mobilenet_v3_large": (DeepLabV3, (3, 64, 48)),
    "fcn_resnet50": (FCN, (3, 64, 48)),
    "shufflenet_v2_x1_0": (ShuffleNetV2, (3, 64, 64)),
    "convnext_tiny": (ConvNeXt, (3, 64, 64)),
}


def architecture(name: str) -> tuple:
    """(constructor, input C x H x W) of `name`, here or in more_architectures.py."""
    from more_architectures import MORE_ARCHITECTURES          # it imports cbr from here
    return {**ARCHITECTURES, **MORE_ARCHITECTURES}[name]


def build_model(name: str, seed: int = 0) -> nn.Module:
    """The architecture with seeded random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = architecture(name)[0]()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()
