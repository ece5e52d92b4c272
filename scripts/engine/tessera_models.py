"""Model definitions shared by make_fixtures.py and compare_ort.py (PyTorch, random weights).

- resnet18(width): ResNet-18 topology (BasicBlock, layers 2-2-2-2); width=64 is the real one.
- mobilenetv2(width_mult): MobileNetV2 topology (inverted residuals, depthwise, ReLU6 -> Clip).
- compact_cnn(): a plain compact CNN (conv-BN-ReLU stages, max pool, GAP, linear).
- mixed_cnn(): small net exercising the other ops (SiLU, HardSwish, LeakyRelu, SE gating,
  Concat, AvgPool, dilation, grouped conv, Softmax).
"""
import torch
import torch.nn as nn


def randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
    return model


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class ResNet18(nn.Module):
    def __init__(self, width=64, classes=1000):
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 7, 2, 3, bias=False), nn.BatchNorm2d(w[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], w[0]
        for i, c in enumerate(w):
            layers += [BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            cin = c
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x):
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet18(width=64, classes=1000):
    return randomize_bn(ResNet18(width, classes)).eval()


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
                   nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, width_mult=1.0, classes=1000):
        super().__init__()
        def c(v):
            return max(8, int(v * width_mult + 4) // 8 * 8)
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
        cin = c(32)
        layers = [nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
        for t, ch, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                cin = c(ch)
        last = c(1280) if width_mult > 1 else 1280 if width_mult == 1 else c(1280)
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2(width_mult=1.0, classes=1000):
    return randomize_bn(MobileNetV2(width_mult, classes)).eval()


class CompactCNN(nn.Module):
    """Plain compact CNN: 3x3 conv-BN-ReLU stages (two convs each), max-pool downsampling, GAP, linear."""
    def __init__(self, widths=(32, 64, 128, 256), classes=2):
        super().__init__()
        layers, cin = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)], widths[0]
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def compact_cnn(widths=(32, 64, 128, 256), classes=2):
    return randomize_bn(CompactCNN(widths, classes)).eval()


class MixedCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(3, 8, 5, 1, 2), nn.BatchNorm2d(8), nn.SiLU())
        self.c2 = nn.Sequential(nn.Conv2d(8, 12, 3, 2, 2, dilation=2), nn.Hardswish())
        self.c3 = nn.Sequential(nn.Conv2d(12, 12, 3, 1, 1, groups=3), nn.LeakyReLU(0.1))
        self.se_fc1 = nn.Conv2d(12, 4, 1)
        self.se_fc2 = nn.Conv2d(4, 12, 1)
        self.branch = nn.Conv2d(12, 6, 1)
        self.avg = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.head = nn.Linear(18, 5)

    def forward(self, x):
        x = self.c1(x)
        x = self.c2(x)
        x = self.c3(x)
        s = torch.sigmoid(self.se_fc2(torch.relu(self.se_fc1(x.mean((2, 3), keepdim=True)))))
        x = x * s
        x = torch.cat([x, nn.functional.hardsigmoid(self.branch(x))], 1)
        x = self.avg(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return torch.softmax(self.head(x), -1)


def mixed_cnn():
    return randomize_bn(MixedCNN()).eval()


def export(model, path, size, opset=17):
    x = torch.randn(1, 3, size, size)
    torch.onnx.export(model, x, path, input_names=["input"], output_names=["output"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)


def gflops(model, size):
    """Conv + linear FLOPs (2 x MACs) per image, for reporting."""
    total = 0
    hooks = []
    def conv_hook(m, i, o):
        nonlocal total
        total += 2 * o.numel() / o.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    def lin_hook(m, i, o):
        nonlocal total
        total += 2 * m.in_features * m.out_features
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total / 1e9
