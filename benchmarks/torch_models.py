"""The PyTorch definitions of the shipped models (as in ../shared/peers), for comparisons.

Their state_dict keys and shapes are exactly squeezegen's weight names for models/squeezeseg.yaml.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Fire(nn.Module):
    def __init__(self, cin, sq, e1, e3):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, sq, 1)
        self.expand1x1 = nn.Conv2d(sq, e1, 1)
        self.expand3x3 = nn.Conv2d(sq, e3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeSeg(nn.Module):
    def __init__(self, classes=21):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 7, stride=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fire2 = Fire(96, 16, 64, 64)
        self.fire3 = Fire(128, 16, 64, 64)
        self.fire4 = Fire(128, 32, 128, 128)
        self.fire5 = Fire(256, 32, 128, 128)
        self.fire6 = Fire(256, 48, 192, 192)
        self.fire7 = Fire(384, 48, 192, 192)
        self.fire8 = Fire(384, 64, 256, 256)
        self.fire9 = Fire(512, 64, 256, 256)
        self.conv10 = nn.Conv2d(512, 1000, 1)
        self.score = nn.Conv2d(1000, classes, 1)
        self.score_pool8 = nn.Conv2d(512, classes, 1)
        self.conv11 = nn.ConvTranspose2d(classes, classes, 3, stride=2, bias=False)
        self.score_pool4 = nn.Conv2d(256, classes, 1)
        self.conv12 = nn.ConvTranspose2d(classes, classes, 3, stride=2, bias=False)
        self.score_pool1 = nn.Conv2d(96, classes, 1)
        self.conv13 = nn.ConvTranspose2d(classes, classes, 11, stride=4, bias=False)

    def forward(self, x):
        pool1 = self.pool(F.relu(self.conv1(x)))
        pool4 = self.pool(self.fire4(self.fire3(self.fire2(pool1))))
        pool8 = self.pool(self.fire8(self.fire7(self.fire6(self.fire5(pool4)))))
        score = self.score(F.relu(self.conv10(self.fire9(pool8))))
        up = self.conv11(score + self.score_pool8(pool8))
        up = self.conv12(up + self.score_pool4(pool4))
        return self.conv13(up + self.score_pool1(pool1))


class LeNet(nn.Module):
    """Caffe's MNIST LeNet with squeezegen's layer names (models/lenet.yaml)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
        x = F.relu(self.ip1(x.flatten(1)))
        return F.softmax(self.ip2(x), dim=1)
