"""Segmentation and detection networks users bring, in plain PyTorch with random weights, cut
down in width and depth (from the papers' and the popular repositories' code): U-Net (the
paper's cropped skips, and milesial/Pytorch-UNet's padded ones), PSPNet, YOLOv5s, HRNet, ERFNet,
ENet, BiSeNet, an FPN, DeepLabV3+ and an EfficientDet BiFPN fusion. The classifiers are in
more_architectures.py, which lists both.

What each brings: ConvTranspose, Slice crops, F.pad and bilinear align_corners=True (U-Nets);
adaptive pools to 1/2/3/6 and bilinear resizes both ways (PSPNet); Focus slices, SiLU, chained
5x5/1 max pools, nearest x2 and three outputs (YOLOv5); strided-conv and upsampled exchange
(HRNet); 3x1/1x3 and dilated factorised convs, conv + max pool concat, PReLU (ERFNet, ENet);
avg_pool2d(x, x.size()[2:]) attention gates (BiSeNet); nearest resizes to a size and four
outputs (FPN); learned fusion weights relu(w) / sum (BiFPN).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from architectures import cbr


# ------------------------------------------------------------------------------------- U-Nets
class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout, pad=1):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=pad, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=pad, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """The paper's U-Net, widths / 8, two levels: unpadded convs, ConvTranspose 2x2/2 up, the
    skip cropped to the upsampled map (a Slice per axis) before the concat."""

    def __init__(self, classes=2):
        super().__init__()
        self.enc1, self.enc2 = DoubleConv(3, 8, 0), DoubleConv(8, 16, 0)
        self.bottom = DoubleConv(16, 32, 0)
        self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, 2), DoubleConv(32, 16, 0)
        self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, 2), DoubleConv(16, 8, 0)
        self.out = nn.Conv2d(8, classes, 1)

    @staticmethod
    def crop(skip, x):
        h, w = x.shape[2:]
        dh, dw = (skip.shape[2] - h) // 2, (skip.shape[3] - w) // 2
        return skip[:, :, dh:dh + h, dw:dw + w]

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        d2 = self.up2(self.bottom(F.max_pool2d(e2, 2)))
        d2 = self.dec2(torch.cat([self.crop(e2, d2), d2], 1))
        d1 = self.up1(d2)
        return self.out(self.dec1(torch.cat([self.crop(e1, d1), d1], 1)))


class Up(nn.Module):
    """milesial/Pytorch-UNet's Up: ConvTranspose 2x2/2 (halving the channels) or bilinear x2
    (align_corners True), F.pad to the skip's size, concat with the skip, double conv."""

    def __init__(self, cin, skip, cout, bilinear):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
            cin //= 2
        self.conv = DoubleConv(cin + skip, cout)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.size()[2] - x1.size()[2], x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class PaddedUNet(nn.Module):
    """milesial/Pytorch-UNet, widths / 8, three levels; odd input sizes make the F.pad before
    each concat non-zero."""

    def __init__(self, classes=3):
        super().__init__()
        self.inc = DoubleConv(3, 8)
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(c, 2 * c))
                                   for c in (8, 16, 32))
        self.ups = nn.ModuleList([Up(64, 32, 32, False), Up(32, 16, 16, True), Up(16, 8, 8, False)])
        self.outc = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


# ------------------------------------------------------------------------------------- PSPNet
class PSPNet(nn.Module):
    """A dilated backbone to stride 8, the pyramid pooling module (AdaptiveAvgPool2d of 1, 2,
    3 and 6 on its 12 x 12 map, 1x1 conv-BN-ReLU, bilinear back, align_corners False and True
    as implementations differ, concat), a 3x3 conv, the classifier, bilinear to the input."""

    def __init__(self, classes=5, bins=(1, 2, 3, 6)):
        super().__init__()
        self.backbone = nn.Sequential(cbr(3, 16, 3, 2), cbr(16, 16, 3), nn.MaxPool2d(3, 2, 1),
                                      cbr(16, 32, 3, 2), cbr(32, 32, 3, dilation=2))
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), cbr(32, 8, 1))
                                    for b in bins)
        self.head = nn.Sequential(cbr(64, 16, 3), nn.Dropout(0.1), nn.Conv2d(16, classes, 1))

    def forward(self, x):
        f = self.backbone(x)
        pyramid = [F.interpolate(s(f), size=f.shape[-2:], mode="bilinear", align_corners=i % 2 == 1)
                   for i, s in enumerate(self.stages)]
        y = self.head(torch.cat([f] + pyramid, 1))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


# ------------------------------------------------------------------------------------- YOLOv5
class YConv(nn.Sequential):
    """YOLOv5's Conv: conv (no bias), BatchNorm eps 0.001, SiLU."""

    def __init__(self, cin, cout, k=1, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-3), nn.SiLU())


class C3(nn.Module):
    def __init__(self, cin, cout, shortcut=True):
        super().__init__()
        c = cout // 2
        self.cv1, self.cv2, self.cv3 = YConv(cin, c), YConv(cin, c), YConv(2 * c, cout)
        self.m = nn.Sequential(YConv(c, c, 1), YConv(c, c, 3))
        self.shortcut = shortcut

    def forward(self, x):
        y = self.cv1(x)
        y = y + self.m(y) if self.shortcut else self.m(y)
        return self.cv3(torch.cat((y, self.cv2(x)), 1))


class Focus(nn.Module):
    def __init__(self, cin, cout, k=3):
        super().__init__()
        self.conv = YConv(cin * 4, cout, k)

    def forward(self, x):
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2],
                                    x[..., 1::2, 1::2]), 1))


class SPPF(nn.Module):
    def __init__(self, cin, cout, k=5):
        super().__init__()
        self.cv1, self.cv2 = YConv(cin, cin // 2), YConv(cin * 2, cout)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class YOLOv5(nn.Module):
    """yolov5s (v5.0's Focus stem, v6's SPPF), widths / 4, depth 1: backbone, PANet neck and
    the three Detect convs' raw maps (three outputs; the Detect head's 5-D view and permute
    are refused: test_onnx_arch_gaps.py)."""

    def __init__(self, classes=3, anchors=3):
        super().__init__()
        self.b0, self.b1, self.b2 = Focus(3, 8), YConv(8, 16, 3, 2), C3(16, 16)
        self.b3, self.b4 = YConv(16, 32, 3, 2), C3(32, 32)
        self.b5, self.b6 = YConv(32, 64, 3, 2), C3(64, 64)
        self.b7, self.b8, self.b9 = YConv(64, 128, 3, 2), C3(128, 128), SPPF(128, 128)
        self.h10, self.h13 = YConv(128, 64), C3(128, 64, False)
        self.h14, self.h17 = YConv(64, 32), C3(64, 32, False)
        self.h18, self.h20 = YConv(32, 32, 3, 2), C3(64, 64, False)
        self.h21, self.h23 = YConv(64, 64, 3, 2), C3(128, 128, False)
        self.up = nn.Upsample(None, 2, "nearest")
        self.detect = nn.ModuleList(nn.Conv2d(c, anchors * (classes + 5), 1) for c in (32, 64, 128))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        h10 = self.h10(self.b9(self.b8(self.b7(p4))))
        h14 = self.h14(self.h13(torch.cat([self.up(h10), p4], 1)))
        out3 = self.h17(torch.cat([self.up(h14), p3], 1))
        out4 = self.h20(torch.cat([self.h18(out3), h14], 1))
        out5 = self.h23(torch.cat([self.h21(out4), h10], 1))
        return tuple(m(o) for m, o in zip(self.detect, (out3, out4, out5)))


# -------------------------------------------------------------------------------------- HRNet
class HRFuse(nn.Module):
    """Two branches (full and half resolution), a residual block each, then the exchange:
    high + upsample(1x1 conv BN(low)), low + strided 3x3 conv BN(high), ReLU."""

    def __init__(self, c1, c2, mode):
        super().__init__()
        self.b1 = nn.Sequential(cbr(c1, c1, 3), cbr(c1, c1, 3, act=None))
        self.b2 = nn.Sequential(cbr(c2, c2, 3), cbr(c2, c2, 3, act=None))
        self.up = nn.Sequential(nn.Conv2d(c2, c1, 1, bias=False), nn.BatchNorm2d(c1),
                                nn.Upsample(scale_factor=2, mode=mode))
        self.down = cbr(c1, c2, 3, 2, act=None)

    def forward(self, xs):
        h, low = F.relu(self.b1(xs[0]) + xs[0]), F.relu(self.b2(xs[1]) + xs[1])
        return F.relu(h + self.up(low)), F.relu(low + self.down(h))


class HRNet(nn.Module):
    """HRNet-W18-ish segmentation: stem to stride 4, a transition to two branches, two fusion
    modules (nearest up, then bilinear), the seg head (the low branch resized to the high one,
    align_corners False, concat, 1x1 convs)."""

    def __init__(self, classes=4):
        super().__init__()
        self.stem = nn.Sequential(cbr(3, 16, 3, 2), cbr(16, 16, 3, 2))
        self.t1, self.t2 = cbr(16, 8, 3), cbr(16, 16, 3, 2)
        self.f1, self.f2 = HRFuse(8, 16, "nearest"), HRFuse(8, 16, "bilinear")
        self.head = nn.Sequential(cbr(24, 24, 1), nn.Conv2d(24, classes, 1))

    def forward(self, x):
        s = self.stem(x)
        high, low = self.f2(self.f1((self.t1(s), self.t2(s))))
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([high, low], 1))


# ----------------------------------------------------------------------------- ERFNet, ENet
class Downsampler(nn.Module):
    """ERFNet's (and ENet's initial block's) downsampler: a strided conv and a max pool
    concatenated, BatchNorm, then ReLU (ERFNet) or PReLU (ENet)."""

    def __init__(self, cin, cout, k=3, pool=2, act=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, k, 2, 1)
        self.pool = nn.MaxPool2d(pool, 2, (pool - 1) // 2)
        self.bn, self.act = nn.BatchNorm2d(cout, eps=1e-3), act()

    def forward(self, x):
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1d(nn.Module):
    def __init__(self, c, dilated):
        super().__init__()
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), 1, (1, 0))
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), 1, (0, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), 1, (dilated, 0), dilation=(dilated, 1))
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), 1, (0, dilated), dilation=(1, dilated))
        self.bn2 = nn.BatchNorm2d(c, eps=1e-3)
        self.dropout = nn.Dropout2d(0.1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1x3_1(F.relu(self.conv3x1_1(x)))))
        y = self.dropout(self.bn2(self.conv1x3_2(F.relu(self.conv3x1_2(y)))))
        return F.relu(y + x)


class ERFNet(nn.Module):
    """ERFNet (Romera et al.), widths / 4: downsamplers, factorised 3x1/1x3 blocks dilated by
    2, 4 and 8, deconv upsamplers (3x3/2, output_padding 1)."""

    def __init__(self, classes=4):
        super().__init__()

        def upsampler(cin, cout):
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, 2, 1, output_padding=1),
                                 nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU())
        self.encoder = nn.Sequential(Downsampler(3, 8), Downsampler(8, 16), NonBottleneck1d(16, 1),
                                     Downsampler(16, 32),
                                     *(NonBottleneck1d(32, d) for d in (2, 4, 8)))
        self.decoder = nn.Sequential(upsampler(32, 16), NonBottleneck1d(16, 1), upsampler(16, 8),
                                     NonBottleneck1d(8, 1), nn.ConvTranspose2d(8, classes, 2, 2))

    def forward(self, x):
        return self.decoder(self.encoder(x))


class ENetBottleneck(nn.Module):
    """ENet's regular bottleneck: 1x1 down, a 3x3 (dilated) or 5x1 + 1x5 conv, 1x1 up, each
    with BatchNorm and PReLU, residual add, PReLU."""

    def __init__(self, c, dilation=1, asymmetric=False):
        super().__init__()
        i = c // 4
        if asymmetric:
            mid = [nn.Conv2d(i, i, (5, 1), 1, (2, 0), bias=False), nn.BatchNorm2d(i), nn.PReLU(i),
                   nn.Conv2d(i, i, (1, 5), 1, (0, 2), bias=False)]
        else:
            mid = [nn.Conv2d(i, i, 3, 1, dilation, dilation, bias=False)]
        self.ext = nn.Sequential(nn.Conv2d(c, i, 1, bias=False), nn.BatchNorm2d(i), nn.PReLU(i),
                                 *mid, nn.BatchNorm2d(i), nn.PReLU(i),
                                 nn.Conv2d(i, c, 1, bias=False), nn.BatchNorm2d(c),
                                 nn.Dropout2d(0.1))
        self.out = nn.PReLU(c)

    def forward(self, x):
        return self.out(x + self.ext(x))


class ENet(nn.Module):
    """ENet's initial block (conv and max pool concatenated, PReLU of one slope) and regular,
    dilated and asymmetric bottlenecks, widths / 4, a deconv back to the input size. ENet's
    MaxUnpool decoder is refused (test_onnx_arch_gaps.py)."""

    def __init__(self, classes=4):
        super().__init__()
        self.initial = Downsampler(3, 16, 3, 3, nn.PReLU)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 2, 2, bias=False), nn.BatchNorm2d(32),
                                  nn.PReLU(32))
        self.blocks = nn.Sequential(ENetBottleneck(32), ENetBottleneck(32, dilation=2),
                                    ENetBottleneck(32, asymmetric=True),
                                    ENetBottleneck(32, dilation=4))
        self.up = nn.ConvTranspose2d(32, classes, 4, 4)

    def forward(self, x):
        return self.up(self.blocks(self.down(self.initial(x))))


# ------------------------------------------------------------------------------------ BiSeNet
class ARM(nn.Module):
    """Attention refinement: conv, avg_pool2d over the whole map, 1x1 conv, BN, sigmoid, mul."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = cbr(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        atten = F.avg_pool2d(feat, feat.size()[2:])
        return torch.mul(feat, torch.sigmoid(self.bn_atten(self.conv_atten(atten))))


class FFM(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.convblk = cbr(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp, fcp):
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = F.avg_pool2d(feat, feat.size()[2:])
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(atten))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    """BiSeNet v1 (CoinCheung/BiSeNet): spatial path, context path with two ARMs and the
    global context (nearest resizes to a size), feature fusion, bilinear output with
    align_corners True. Its avg_pool2d(x, x.size()[2:]) needs a fixed batch to export."""

    def __init__(self, classes=4):
        super().__init__()
        self.sp = nn.Sequential(cbr(3, 8, 7, 2), cbr(8, 8, 3, 2), cbr(8, 16, 3, 2))
        self.cp16 = nn.Sequential(cbr(3, 8, 3, 2), cbr(8, 16, 3, 2), cbr(16, 16, 3, 2),
                                  cbr(16, 24, 3, 2))
        self.cp32 = cbr(24, 32, 3, 2)
        self.arm16, self.arm32 = ARM(24, 16), ARM(32, 16)
        self.conv_avg = cbr(32, 16, 1)
        self.head32, self.head16 = cbr(16, 16, 3), cbr(16, 16, 3)
        self.ffm = FFM(32, 32)
        self.out = nn.Conv2d(32, classes, 1)

    def forward(self, x):
        size = x.size()[2:]
        feat16 = self.cp16(x)
        feat32 = self.cp32(feat16)
        avg = self.conv_avg(F.avg_pool2d(feat32, feat32.size()[2:]))
        f32 = self.arm32(feat32) + F.interpolate(avg, feat32.size()[2:], mode="nearest")
        f32 = self.head32(F.interpolate(f32, feat16.size()[2:], mode="nearest"))
        f16 = self.arm16(feat16) + f32
        f16 = self.head16(F.interpolate(f16, scale_factor=2.0, mode="nearest"))
        feat = self.ffm(self.sp(x), f16)
        return F.interpolate(self.out(feat), size, mode="bilinear", align_corners=True)


# ------------------------------------------------------------------------------------- others
class FPN(nn.Module):
    """torchvision's FeaturePyramidNetwork: lateral 1x1 convs, nearest resizes to the
    lateral's size, adds, 3x3 output convs, and LastLevelMaxPool (max_pool2d(x, 1, 2, 0)):
    four outputs."""

    def __init__(self):
        super().__init__()
        self.body = nn.ModuleList([cbr(3, 8, 3, 2), cbr(8, 16, 3, 2), cbr(16, 32, 3, 2)])
        self.inner = nn.ModuleList(nn.Conv2d(c, 16, 1) for c in (8, 16, 32))
        self.layer = nn.ModuleList(nn.Conv2d(16, 16, 3, padding=1) for _ in range(3))

    def forward(self, x):
        feats = []
        for stage in self.body:
            x = stage(x)
            feats.append(x)
        last = self.inner[2](feats[2])
        results = [self.layer[2](last)]
        for i in (1, 0):
            lateral = self.inner[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer[i](last))
        return tuple(results) + (F.max_pool2d(results[-1], 1, 2, 0),)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+'s decoder: high features resized to the low ones (bilinear, align_corners
    True), concat with a 1x1 projection of them, 3x3 conv, classifier, x4 up."""

    def __init__(self, classes=4):
        super().__init__()
        self.low = nn.Sequential(cbr(3, 16, 3, 2), cbr(16, 16, 3, 2))
        self.high = nn.Sequential(cbr(16, 32, 3, 2), cbr(32, 32, 3, 2), cbr(32, 16, 1))
        self.proj = cbr(16, 8, 1)
        self.head = nn.Sequential(cbr(24, 16, 3), nn.Conv2d(16, classes, 1))

    def forward(self, x):
        low = self.low(x)
        y = F.interpolate(self.high(low), size=low.shape[2:], mode="bilinear", align_corners=True)
        y = self.head(torch.cat([y, self.proj(low)], 1))
        return F.interpolate(y, scale_factor=4, mode="bilinear", align_corners=True)


class BiFPN(nn.Module):
    """EfficientDet's BiFPN node: fast normalised fusion of two levels with learned weights
    (relu(w) / (sum(relu(w)) + eps), computed at import), swish, separable conv, BN."""

    def __init__(self, classes=4):
        super().__init__()
        self.p3, self.p4 = cbr(3, 16, 3, 4), cbr(16, 16, 3, 2)
        self.w = nn.Parameter(torch.tensor([0.8, 0.3]))
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False),
                                  nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        p3 = self.p3(x)
        p4 = F.interpolate(self.p4(p3), scale_factor=2, mode="nearest")
        w = F.relu(self.w)
        w = w / (torch.sum(w, dim=0) + 1e-4)
        y = w[0] * p3 + w[1] * p4
        return self.out(self.conv(y * torch.sigmoid(y)))


# name -> (constructor, input C x H x W)
DENSE_ARCHITECTURES = {
    "unet": (UNet, (3, 76, 84)),
    "unet_padded": (PaddedUNet, (3, 57, 71)),
    "pspnet": (PSPNet, (3, 96, 96)),
    "yolov5s": (YOLOv5, (3, 64, 96)),
    "hrnet": (HRNet, (3, 64, 64)),
    "erfnet": (ERFNet, (3, 64, 96)),
    "enet": (ENet, (3, 64, 64)),
    "bisenet": (BiSeNet, (3, 64, 96)),
    "fpn": (FPN, (3, 64, 64)),
    "deeplabv3_plus": (DeepLabV3Plus, (3, 64, 64)),
    "bifpn": (BiFPN, (3, 64, 64)),
}
