"""More networks users bring, in plain PyTorch with random weights, cut down in width and depth
(written from torchvision's, timm's and the papers' reference code): the classifiers here,
DenseNet, GoogLeNet and Inception-v3 (with the pretrained weights' transform_input), ResNeXt,
Wide ResNet, RegNetY, MNASNet, AlexNet, ResNet with CBAM, GhostNet, ResNet-D, VoVNet,
ShuffleNetV1 and Xception; the segmentation and detection networks in dense_architectures.py.

What each brings that architectures.py's networks do not: pre-activation BN-ReLU before convs
and concat growth (DenseNet); channel gathers x[:, 0] (transform_input), max pools 3/1/1 in
ceil mode, 1x7/7x1 convs, average pools 3/1/1 that count the padding (GoogLeNet, Inception);
grouped 3x3 convs with SE (ResNeXt, RegNetY); AdaptiveAvgPool2d((6, 6)) of a 6x6 map (AlexNet);
an MLP over average and max pools added, channel max and mean (CBAM); a slice after a concat
and relu6(x + 3) / 6 gates (GhostNet); ceil-mode average pools without the padding in the
count (ResNet-D); x.view(x.size(0), -1) heads (ResNeXt, CBAM, GhostNet, Xception).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from architectures import cbr
from dense_architectures import DENSE_ARCHITECTURES


def bconv(cin, cout, k, stride=1, pad=0):
    """torchvision's Inception BasicConv2d: conv (no bias), BatchNorm eps 0.001, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=False),
                         nn.BatchNorm2d(cout, eps=0.001), nn.ReLU(inplace=True))


def transform_input(x):
    """GoogLeNet's and Inception-v3's transform_input (on with the pretrained weights)."""
    x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x_ch0, x_ch1, x_ch2), 1)


# ------------------------------------------------------------------------------------ DenseNet
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, inputs):
        x = self.conv1(self.relu1(self.norm1(torch.cat(inputs, 1))))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth, bn_size):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """densenet121's structure (growth 32, blocks 6/12/24/16) with growth 8, blocks 2/3/2."""

    def __init__(self, growth=8, blocks=(2, 3, 2), init=16, bn_size=2, classes=10):
        super().__init__()
        layers = [nn.Conv2d(3, init, 7, 2, 3, bias=False), nn.BatchNorm2d(init), nn.ReLU(True),
                  nn.MaxPool2d(3, 2, 1)]
        c = init
        for i, n in enumerate(blocks):
            layers.append(DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i + 1 < len(blocks):             # transition: BN, ReLU, 1x1 conv, avgpool 2/2
                layers += [nn.BatchNorm2d(c), nn.ReLU(True), nn.Conv2d(c, c // 2, 1, bias=False),
                           nn.AvgPool2d(2, 2)]
                c //= 2
        layers.append(nn.BatchNorm2d(c))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


# ------------------------------------------------------------------------ GoogLeNet, Inception
class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pool):
        super().__init__()
        self.branch1 = bconv(cin, c1, 1)
        self.branch2 = nn.Sequential(bconv(cin, c3r, 1), bconv(c3r, c3, 3, pad=1))
        self.branch3 = nn.Sequential(bconv(cin, c5r, 1), bconv(c5r, c5, 3, pad=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), bconv(cin, pool, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's googlenet in eval (no aux heads), widths / 8, inception 4c-4e and 5b
    left out."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = bconv(3, 8, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.conv3 = bconv(8, 8, 1), bconv(8, 24, 3, pad=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(24, 8, 12, 16, 2, 4, 4)         # 32
        self.inception3b = Inception(32, 16, 16, 24, 4, 12, 8)       # 60
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(60, 24, 12, 26, 2, 6, 8)        # 64
        self.inception4b = Inception(64, 20, 14, 28, 3, 8, 8)        # 64
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = Inception(64, 32, 20, 40, 4, 16, 16)      # 104
        self.dropout, self.fc = nn.Dropout(0.2), nn.Linear(104, classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(transform_input(x)))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.maxpool4(self.inception4b(self.inception4a(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(self.inception5a(x), (1, 1)), 1)
        return self.fc(self.dropout(x))


class InceptionA(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        self.branch1x1 = bconv(cin, 8, 1)
        self.branch5x5 = nn.Sequential(bconv(cin, 6, 1), bconv(6, 8, 5, pad=2))
        self.branch3x3dbl = nn.Sequential(bconv(cin, 8, 1), bconv(8, 12, 3, pad=1),
                                          bconv(12, 12, 3, pad=1))
        self.branch_pool = bconv(cin, pool, 1)

    def forward(self, x):
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x),
                          self.branch_pool(pooled)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = bconv(cin, 24, 3, stride=2)
        self.branch3x3dbl = nn.Sequential(bconv(cin, 8, 1), bconv(8, 12, 3, pad=1),
                                          bconv(12, 12, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        self.branch1x1 = bconv(cin, 24, 1)
        self.branch7x7 = nn.Sequential(bconv(cin, c7, 1), bconv(c7, c7, (1, 7), pad=(0, 3)),
                                       bconv(c7, 24, (7, 1), pad=(3, 0)))
        self.branch7x7dbl = nn.Sequential(
            bconv(cin, c7, 1), bconv(c7, c7, (7, 1), pad=(3, 0)), bconv(c7, c7, (1, 7), pad=(0, 3)),
            bconv(c7, c7, (7, 1), pad=(3, 0)), bconv(c7, 24, (1, 7), pad=(0, 3)))
        self.branch_pool = bconv(cin, 24, 1)

    def forward(self, x):
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x),
                          self.branch_pool(pooled)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = nn.Sequential(bconv(cin, 24, 1), bconv(24, 40, 3, stride=2))
        self.branch7x7x3 = nn.Sequential(
            bconv(cin, 24, 1), bconv(24, 24, (1, 7), pad=(0, 3)), bconv(24, 24, (7, 1), pad=(3, 0)),
            bconv(24, 24, 3, stride=2))

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x),
                          F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch1x1 = bconv(cin, 40, 1)
        self.branch3x3_1 = bconv(cin, 48, 1)
        self.branch3x3_2a = bconv(48, 48, (1, 3), pad=(0, 1))
        self.branch3x3_2b = bconv(48, 48, (3, 1), pad=(1, 0))
        self.branch3x3dbl_1 = nn.Sequential(bconv(cin, 56, 1), bconv(56, 48, 3, pad=1))
        self.branch3x3dbl_3a = bconv(48, 48, (1, 3), pad=(0, 1))
        self.branch3x3dbl_3b = bconv(48, 48, (3, 1), pad=(1, 0))
        self.branch_pool = bconv(cin, 24, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_1(x)
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class InceptionV3(nn.Module):
    """torchvision's inception_v3 in eval (no aux logits), widths / ~8, one block of each kind;
    75 x 75 is the smallest input it takes."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(bconv(3, 4, 3, stride=2), bconv(4, 4, 3), bconv(4, 8, 3, pad=1),
                                  nn.MaxPool2d(3, 2), bconv(8, 10, 1), bconv(10, 24, 3),
                                  nn.MaxPool2d(3, 2))
        self.mixed = nn.Sequential(InceptionA(24, 8), InceptionB(36), InceptionC(72, 16),
                                   InceptionD(96), InceptionE(160))
        self.dropout, self.fc = nn.Dropout(0.5), nn.Linear(256, classes)

    def forward(self, x):
        x = self.mixed(self.stem(transform_input(x)))
        return self.fc(torch.flatten(self.dropout(F.adaptive_avg_pool2d(x, (1, 1))), 1))


# ------------------------------------------------------------------ ResNeXt, Wide ResNet, RegNetY
class XBottleneck(nn.Module):
    """torchvision's Bottleneck with groups and base_width."""

    def __init__(self, cin, planes, stride, groups, base_width):
        super().__init__()
        width, cout = int(planes * (base_width / 64.0)) * groups, planes * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (cbr(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout
                           else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class ResNeXt(nn.Module):
    """resnext50_32x4d (groups 32, base width 4: here 4 and 16) or wide_resnet50_2 (groups 1,
    base width 128); planes / 16, blocks 1/2/1/1; the head flattens with x.view(x.size(0), -1)."""

    def __init__(self, groups=4, base_width=16, blocks=(1, 2, 1, 1), classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 8
        for i, (n, planes) in enumerate(zip(blocks, (4, 8, 16, 32))):
            for j in range(n):
                layers.append(XBottleneck(cin, planes, 2 if i and not j else 1, groups,
                                          base_width))
                cin = planes * 4
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.avgpool(self.layers(self.stem(x)))
        return self.fc(x.view(x.size(0), -1))


class RegSE(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))) * x


class ResBottleneckBlock(nn.Module):
    """torchvision's RegNet block: 1x1, grouped 3x3 (group width 2 here), SE of a quarter of the
    input width, 1x1, projected shortcut."""

    def __init__(self, cin, cout, stride, group_width=2):
        super().__init__()
        self.proj = cbr(cin, cout, 1, stride, act=None) if cin != cout or stride != 1 else None
        self.f = nn.Sequential(cbr(cin, cout, 1), cbr(cout, cout, 3, stride,
                                                      groups=cout // group_width),
                               RegSE(cout, int(round(0.25 * cin))), cbr(cout, cout, 1, act=None))

    def forward(self, x):
        return F.relu((self.proj(x) if self.proj is not None else x) + self.f(x))


class RegNetY(nn.Module):
    """regnet_y_400mf's structure (widths 48/104/208/440, depths 1/3/6/6) at widths / 4,
    depths 1/2/2/1."""

    def __init__(self, widths=(12, 26, 52, 110), depths=(1, 2, 2, 1), classes=10):
        super().__init__()
        self.stem = cbr(3, 8, 3, 2)
        blocks, cin = [], 8
        for w, d in zip(widths, depths):
            for j in range(d):
                blocks.append(ResBottleneckBlock(cin, w, 2 if j == 0 else 1))
                cin = w
        self.trunk_output = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.trunk_output(self.stem(x)), (1, 1))
        return self.fc(x.flatten(start_dim=1))


# ------------------------------------------------------------------------------------ MNASNet
class MnasIR(nn.Module):
    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.layers(x) + x if self.apply_residual else self.layers(x)


class MNASNet(nn.Module):
    """mnasnet1_0's stacks (out, kernel, stride, expand, repeats) with widths / 4."""
    STACKS = [(6, 3, 2, 3, 3), (10, 5, 2, 3, 3), (20, 5, 2, 6, 3), (24, 3, 1, 6, 2),
              (48, 5, 2, 6, 4), (80, 3, 1, 6, 1)]

    def __init__(self, classes=10):
        super().__init__()
        layers = [nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                  nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8),
                  nn.ReLU(inplace=True), nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)]
        cin = 4
        for cout, k, s, e, n in self.STACKS:
            for i in range(n):
                layers.append(MnasIR(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        layers += [nn.Conv2d(cin, 320, 1, bias=False), nn.BatchNorm2d(320), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(320, classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


# ------------------------------------------------------------------------------------ AlexNet
class AlexNet(nn.Module):
    """torchvision's alexnet, widths / 8; at 224 x 224 the features are 6 x 6, so that its
    AdaptiveAvgPool2d((6, 6)) exports as a 1x1 average pool."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(8, 24, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(48, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(32 * 6 * 6, 128), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(128, 128), nn.ReLU(inplace=True), nn.Linear(128, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------------------- CBAM
class ChannelGate(nn.Module):
    """CBAM's channel attention (Jongchan/attention-module): one MLP of Linear layers over the
    average and the max pool, added, sigmoid, unsqueezed and expanded to x."""

    def __init__(self, c, r=4):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(),
                                 nn.Linear(c // r, c))

    def forward(self, x):
        hw = (x.size(2), x.size(3))
        avg = self.mlp(F.avg_pool2d(x, hw, stride=hw))
        mx = self.mlp(F.max_pool2d(x, hw, stride=hw))
        return x * torch.sigmoid(avg + mx).unsqueeze(2).unsqueeze(3).expand_as(x)


class SpatialGate(nn.Module):
    """CBAM's spatial attention: channel max and mean concatenated, 7x7 conv, BN, sigmoid."""

    def __init__(self):
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 7, 1, 3, bias=False), nn.BatchNorm2d(1))

    def forward(self, x):
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), 1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAMBlock(nn.Module):
    def __init__(self, cin, c, stride):
        super().__init__()
        self.body = nn.Sequential(cbr(cin, c, 3, stride), cbr(c, c, 3, act=None))
        self.short = cbr(cin, c, 1, stride, act=None) if stride != 1 or cin != c else None
        self.cg, self.sg = ChannelGate(c), SpatialGate()

    def forward(self, x):
        y = self.sg(self.cg(self.body(x)))
        return F.relu(y + (self.short(x) if self.short is not None else x))


class CBAMResNet(nn.Module):
    """ResNet-18 with CBAM in each basic block, three stages; avg_pool2d(x, 4) and
    x.view(x.size(0), -1) before the fc."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 16, 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layers = nn.Sequential(CBAMBlock(16, 16, 1), CBAMBlock(16, 32, 2),
                                    CBAMBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.avg_pool2d(self.layers(self.stem(x)), 4)
        return self.fc(x.view(x.size(0), -1))


# ------------------------------------------------------------------------------------- others
class GhostModule(nn.Module):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.cout, init = cout, math.ceil(cout / 2)
        act = [nn.ReLU(True)] if relu else []
        self.primary = nn.Sequential(nn.Conv2d(cin, init, 1, bias=False), nn.BatchNorm2d(init),
                                     *act)
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
                                   nn.BatchNorm2d(init), *act)

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, :self.cout, :, :]


class GhostBottleneck(nn.Module):
    """GhostNet's bottleneck: ghost module, strided depthwise conv, SE gated by
    hard_sigmoid(x) = relu6(x + 3) / 6, ghost module, shortcut."""

    def __init__(self, cin, mid, cout, k, s, se):
        super().__init__()
        self.g1, self.g2 = GhostModule(cin, mid), GhostModule(mid, cout, relu=False)
        self.dw = (nn.Sequential(nn.Conv2d(mid, mid, k, s, k // 2, groups=mid, bias=False),
                                 nn.BatchNorm2d(mid)) if s > 1 else nn.Identity())
        self.se = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(mid, mid // 4, 1), nn.ReLU(),
                                 nn.Conv2d(mid // 4, mid, 1)) if se else None)
        self.short = (nn.Identity() if cin == cout and s == 1 else nn.Sequential(
            nn.Conv2d(cin, cin, k, s, k // 2, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = self.dw(self.g1(x))
        if self.se is not None:
            y = y * (F.relu6(self.se(y) + 3.0) / 6.0)
        return self.g2(y) + self.short(x)


class GhostNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.blocks = nn.Sequential(cbr(3, 8, 3, 2), GhostBottleneck(8, 8, 8, 3, 1, False),
                                    GhostBottleneck(8, 24, 12, 3, 2, False),
                                    GhostBottleneck(12, 36, 20, 5, 2, True),
                                    GhostBottleneck(20, 60, 20, 5, 1, True), cbr(20, 60, 1))
        self.conv_head, self.fc = nn.Conv2d(60, 64, 1), nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.conv_head(F.adaptive_avg_pool2d(self.blocks(x), (1, 1))))
        return self.fc(F.dropout(x.view(x.size(0), -1), 0.2, training=self.training))


class ResNetD(nn.Module):
    """timm's ResNet-D: a deep 3x3 stem, and the downsampling shortcut as AvgPool2d(2, 2,
    ceil_mode=True, count_include_pad=False) then a 1x1 conv (odd sizes: a partial window)."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 8, 3, 2), cbr(8, 8, 3), cbr(8, 16, 3),
                                  nn.MaxPool2d(3, 2, 1))
        self.body = nn.Sequential(cbr(16, 32, 3, 2), cbr(32, 32, 3, act=None))
        self.down = nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                                  nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(F.relu(self.body(x) + self.down(x)).mean((2, 3)))


class VoVNet(nn.Module):
    """VoVNetV2's one-shot aggregation: chained 3x3 convs, all concatenated, 1x1, the eSE gate
    (pool, 1x1 conv, hardsigmoid), identity add."""

    def __init__(self, c=16, classes=10):
        super().__init__()
        self.stem = cbr(3, c, 3, 2)
        self.layers = nn.ModuleList([cbr(c, 8, 3), cbr(8, 8, 3), cbr(8, 8, 3)])
        self.concat = cbr(c + 24, c, 1)
        self.fc, self.hsigmoid = nn.Conv2d(c, c, 1), nn.Hardsigmoid()
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1]))
        y = self.concat(torch.cat(outs, 1))
        y = y * self.hsigmoid(self.fc(F.adaptive_avg_pool2d(y, 1))) + x
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class ShuffleNetV1(nn.Module):
    """ShuffleNetV1's stride-2 unit: grouped 1x1, channel shuffle of 3 groups, depthwise 3x3/2,
    grouped 1x1, concat with avg_pool2d(x, 3, 2, 1) of the input, ReLU."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 24, 3, 2)
        self.g1 = cbr(24, 12, 1, groups=3)
        self.dw = cbr(12, 12, 3, 2, groups=12, act=None)
        self.g2 = cbr(12, 24, 1, groups=3, act=None)
        self.fc = nn.Linear(48, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.g1(x)
        n, c, h, w = y.shape
        y = y.view(n, 3, c // 3, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        y = F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), self.g2(self.dw(y))], 1))
        return self.fc(y.mean([2, 3]))


class Xception(nn.Module):
    """Xception's entry block: ReLU, separable convs (depthwise 3x3, pointwise 1x1), BN, max
    pool 3/2/1, and the strided 1x1 skip."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 16, 3, 2)
        self.rep = nn.Sequential(
            nn.ReLU(), nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
            nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), nn.Conv2d(32, 32, 1, bias=False),
            nn.BatchNorm2d(32), nn.MaxPool2d(3, 2, 1))
        self.skip = nn.Sequential(nn.Conv2d(16, 32, 1, 2, bias=False), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(self.rep(x) + self.skip(x))
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).view(x.size(0), -1))


# name -> (constructor, input C x H x W); then dense_architectures.py's
MORE_ARCHITECTURES = {
    "densenet121": (DenseNet, (3, 64, 64)),
    "googlenet": (GoogLeNet, (3, 64, 64)),
    "inception_v3": (InceptionV3, (3, 75, 75)),
    "resnext50_32x4d": (ResNeXt, (3, 57, 71)),
    "wide_resnet50_2": (lambda: ResNeXt(1, 128), (3, 64, 64)),
    "regnet_y_400mf": (RegNetY, (3, 64, 64)),
    "mnasnet1_0": (MNASNet, (3, 64, 64)),
    "alexnet": (AlexNet, (3, 224, 224)),
    "cbam_resnet18": (CBAMResNet, (3, 64, 64)),
    "ghostnet": (GhostNet, (3, 64, 64)),
    "resnet18_d": (ResNetD, (3, 57, 71)),
    "vovnet": (VoVNet, (3, 32, 32)),
    "shufflenet_v1": (ShuffleNetV1, (3, 32, 32)),
    "xception": (Xception, (3, 32, 32)),
    **DENSE_ARCHITECTURES,
}
