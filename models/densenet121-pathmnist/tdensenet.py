"""Plain-PyTorch NCHW DenseNet121 whose module names map 1:1 onto Keras' DenseNet121 layer names.

Keras DenseNet121 (keras.applications) layout, reproduced exactly:
  ZeroPadding(3) + conv1_conv 7x7/2 + conv1_bn + relu, ZeroPadding(1) + MaxPool 3x3/2 (pool1)
  dense blocks of [6, 12, 24, 16] layers: BN-ReLU-Conv1x1(128)-BN-ReLU-Conv3x3(32, same) -> concat
  transitions pool{2,3,4}: BN-ReLU-Conv1x1(C/2)-AvgPool 2x2/2
  final bn + relu, then (Sequential head) GlobalAveragePooling -> Dropout -> Dense.
MaxPool after ReLU with zero padding == MaxPool with -inf padding (inputs are >= 0).
"""
import torch
from torch import nn


class DenseLayer(nn.Module):
    def __init__(self, cin, prefix):
        super().__init__()
        self.prefix = prefix
        self.bn0 = nn.BatchNorm2d(cin, eps=1.001e-5)
        self.conv1 = nn.Conv2d(cin, 128, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(128, eps=1.001e-5)
        self.conv2 = nn.Conv2d(128, 32, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv1(torch.relu(self.bn0(x)))
        y = self.conv2(torch.relu(self.bn1(y)))
        return torch.cat([x, y], 1)

    def keras_names(self):
        p = self.prefix
        return [(f"{p}_0_bn", self.bn0), (f"{p}_1_conv", self.conv1), (f"{p}_1_bn", self.bn1), (f"{p}_2_conv", self.conv2)]


class Transition(nn.Module):
    def __init__(self, cin, prefix):
        super().__init__()
        self.prefix = prefix
        self.bn = nn.BatchNorm2d(cin, eps=1.001e-5)
        self.conv = nn.Conv2d(cin, cin // 2, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(torch.relu(self.bn(x))))

    def keras_names(self):
        return [(f"{self.prefix}_bn", self.bn), (f"{self.prefix}_conv", self.conv)]


class DenseNet121(nn.Module):
    def __init__(self, num_classes=9, blocks=(6, 12, 24, 16)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)
        layers = []
        c = 64
        for bi, n in enumerate(blocks):
            for li in range(n):
                layers.append(DenseLayer(c, f"conv{bi + 2}_block{li + 1}"))
                c += 32
            if bi < len(blocks) - 1:
                layers.append(Transition(c, f"pool{bi + 2}"))
                c //= 2
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c, eps=1.001e-5)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c

    def forward_features(self, x):
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = self.features(x)
        x = torch.relu(self.bn(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x):
        return torch.softmax(self.fc(self.forward_features(x)), dim=1)

    def named_keras_modules(self):
        yield "conv1_conv", self.conv1
        yield "conv1_bn", self.bn1
        for m in self.features:
            yield from m.keras_names()
        yield "bn", self.bn
