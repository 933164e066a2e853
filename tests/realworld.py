"""Graph patterns of models people deploy that nobody here wrote: TF-converted CNNs, YOLO-style detectors, OCR
detector / recognizer (CRNN with a bidirectional LSTM), audio front ends, token models, GRU keyword spotters.
Small random weights, built here (onnx.helper for what tf2onnx emits, torch's TorchScript exporter for old
PyTorch exports, with a dynamic batch as such exports usually have): no downloads. `build(name, size)` returns
an onnx.ModelProto; `CORPUS` lists the names; a BERT-style text encoder (`bert_encoder`, TRANSFORMERS) is built
the same way. bench/realworld.py times the same builders at realistic sizes.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F


def _tf_classifier(size: int = 32, opset: int = 13) -> onnx.ModelProto:
    """What tf2onnx writes for a Keras CNN: NHWC input transposed to NCHW, ReLU floors and caps as Max/Min with
    constants, LeakyRelu, 3x1 / 1x3 kernels, reflect and constant Pad, a LayerNorm split into basic ops over the
    channels-last axis, GlobalMaxPool, Dense as MatMul + Add, Softmax."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []

    def const(name, array):
        inits.append(
            numpy_helper.from_array(
                np.asarray(array, np.float32 if np.asarray(array).dtype.kind == "f" else np.int64), name
            )
        )
        return name

    def conv(name, x, cin, cout, kh, kw, **attrs):
        w = const(f"{name}_w", rng.standard_normal((cout, cin, kh, kw)) * (1.5 / np.sqrt(cin * kh * kw)))
        b = const(f"{name}_b", rng.standard_normal(cout) * 0.1)
        return helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[kh, kw], **attrs)

    n = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
        conv("c1", "nchw", 3, 16, 3, 3, pads=[1, 1, 1, 1]),
        helper.make_node("Max", ["c1", const("floor", -0.4)], ["m1"]),
        conv("c2", "m1", 16, 16, 3, 1, pads=[1, 0, 1, 0]),
        helper.make_node("LeakyRelu", ["c2"], ["l2"], alpha=0.1),
        conv("c3", "l2", 16, 16, 1, 3, pads=[0, 1, 0, 1]),
        helper.make_node("Pad", ["c3", const("p4", [0, 0, 1, 1, 0, 0, 1, 1])], ["pad4"], mode="reflect"),
        conv("c4", "pad4", 16, 24, 3, 3),
        helper.make_node("Min", ["c4", const("cap", 6.0), const("cap2", 5.5)], ["m4"]),
        helper.make_node("Max", ["m4", const("zero", 0.0)], ["r4"]),
        helper.make_node(
            "Pad", ["r4", const("p5", [0, 0, 1, 1, 0, 0, 1, 1]), const("pv", 0.0)], ["pad5"], mode="constant"
        ),
        conv("c5", "pad5", 24, 32, 3, 3, strides=[2, 2]),
        helper.make_node("Transpose", ["c5"], ["nhwc"], perm=[0, 2, 3, 1]),
        # LayerNormalization as tf2onnx spells it: mean, centred square, mean, add eps, sqrt, divide, scale, shift
        helper.make_node("ReduceMean", ["nhwc"], ["mu"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["nhwc", "mu"], ["xc"]),
        helper.make_node("Mul", ["xc", "xc"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1),
        helper.make_node("Add", ["var", const("eps", 1e-3)], ["vare"]),
        helper.make_node("Sqrt", ["vare"], ["std"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        helper.make_node("Mul", ["xn", const("gamma", rng.uniform(0.5, 1.5, 32))], ["xg"]),
        helper.make_node("Add", ["xg", const("beta", rng.standard_normal(32) * 0.1)], ["ln"]),
        helper.make_node("Transpose", ["ln"], ["back"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalMaxPool", ["back"], ["gmp"]),
        helper.make_node("Flatten", ["gmp"], ["flat"]),
        helper.make_node("MatMul", ["flat", const("dense_w", rng.standard_normal((32, 10)) * 0.2)], ["mm"]),
        helper.make_node("Add", ["mm", const("dense_b", rng.standard_normal(10) * 0.1)], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        n,
        "tf_classifier",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__1", size, size, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__2", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


class _ConvBnAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, act: type[nn.Module] = nn.SiLU) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), act())


class _YoloLike(nn.Module):
    """v5's space-to-depth stem, v8's C2f (Split, Concat), SPPF, nearest upsampling, two decoded heads whose
    anchor grids come from the feature map's shape (Shape -> Range -> Expand once exported)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = _ConvBnAct(12, 16)
        self.down1, self.down2 = _ConvBnAct(16, 32, s=2), _ConvBnAct(32, 64, s=2)
        self.c2f_in, self.c2f_b, self.c2f_out = _ConvBnAct(32, 32, 1), _ConvBnAct(16, 16), _ConvBnAct(48, 32, 1)
        self.sppf_in, self.sppf_out = _ConvBnAct(64, 32, 1), _ConvBnAct(128, 64, 1)
        self.fuse = _ConvBnAct(96, 32, 1)
        self.heads = nn.ModuleList([nn.Conv2d(32, 4 + classes, 1), nn.Conv2d(64, 4 + classes, 1)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        p3 = self.down1(self.stem(x))
        a, b = self.c2f_in(p3).chunk(2, 1)
        p3 = self.c2f_out(torch.cat([a, b, b + self.c2f_b(b)], 1))
        y = self.sppf_in(self.down2(p3))
        m1 = F.max_pool2d(y, 5, 1, 2)
        m2 = F.max_pool2d(m1, 5, 1, 2)
        p4 = self.sppf_out(torch.cat([y, m1, m2, F.max_pool2d(m2, 5, 1, 2)], 1))
        p3 = self.fuse(torch.cat([p3, F.interpolate(p4, scale_factor=2.0, mode="nearest")], 1))
        boxes, scores = [], []
        for feat, head, stride in ((p3, self.heads[0], 8), (p4, self.heads[1], 16)):
            out = head(feat)
            h, w = out.shape[2], out.shape[3]
            gy = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(1, h, w)
            gx = torch.arange(w, dtype=torch.float32).view(1, 1, w).expand(1, h, w)
            xy = (out[:, 0:2].sigmoid() * 2 - 0.5 + torch.stack([gx, gy], 1)) * stride
            wh = out[:, 2:4].exp().clamp(max=50.0) * stride
            boxes.append(torch.cat([xy, wh], 1).flatten(2))
            scores.append(out[:, 4:].sigmoid().flatten(2))
        return torch.cat(boxes, 2), torch.cat(scores, 2)


class _OcrDetector(nn.Module):
    """A DB-style text detector: Hardswish convs, a squeeze-excite with Hardsigmoid, GELU (Erf), ConvTranspose
    and bilinear Resize back to the input size, a sigmoid probability map."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2 = _ConvBnAct(3, 16, s=2, act=nn.Hardswish), _ConvBnAct(16, 32, s=2, act=nn.Hardswish)
        self.se_reduce, self.se_expand = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.mix = nn.Conv2d(32, 32, 3, padding=1)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.head = nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.enc2(self.enc1(x))
        y = y * F.hardsigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = F.gelu(self.mix(y))
        y = F.interpolate(self.up(y), size=x.shape[2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(y))


class _Crnn(nn.Module):
    """An OCR recognizer: a conv stack that pools the height away, a bidirectional LSTM over the width,
    per-column class scores (CTC), as PaddleOCR / EasyOCR recognizers are built."""

    def __init__(self, hidden: int = 32, classes: int = 37) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _ConvBnAct(1, 16, act=nn.ReLU),
            nn.MaxPool2d(2),
            _ConvBnAct(16, 32, act=nn.ReLU),
            nn.MaxPool2d((2, 1)),
            _ConvBnAct(32, 48, act=nn.ReLU),
        )
        self.rnn = nn.LSTM(48, hidden, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.convs(x).mean(2).permute(0, 2, 1)  # the height pooled away: [batch, width, channels]
        return self.fc(self.rnn(seq)[0]).log_softmax(-1)


class _AudioCnn(nn.Module):
    """A wake-word front end: a strided Conv1d with fixed cos/sin kernels as the STFT, power, Log, per-utterance
    min/max normalisation (ReduceMin / ReduceMax), Where as a noise gate, then a small 2-D CNN."""

    def __init__(self, n_fft: int = 128, hop: int = 64, bins: int = 32) -> None:
        super().__init__()
        t = np.arange(n_fft)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * t / n_fft)
        k = np.arange(bins)[:, None]
        basis = np.concatenate([np.cos(2 * np.pi * k * t / n_fft), -np.sin(2 * np.pi * k * t / n_fft)]) * window
        self.stft = nn.Conv1d(1, 2 * bins, n_fft, stride=hop, bias=False)
        self.stft.weight.data = torch.tensor(basis[:, None, :], dtype=torch.float32)
        self.bins = bins
        self.cnn = nn.Sequential(
            _ConvBnAct(1, 8, act=nn.ReLU),
            _ConvBnAct(8, 16, s=2, act=nn.ReLU),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 3),
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.stft(wave)
        power = spec[:, : self.bins] ** 2 + spec[:, self.bins :] ** 2
        logmel = torch.log(power + 1e-6)
        lo, hi = logmel.amin((1, 2), keepdim=True), logmel.amax((1, 2), keepdim=True)
        norm = (logmel - lo) / (hi - lo + 1e-6)
        gated = torch.where(norm > 0.2, norm, torch.zeros_like(norm))
        return self.cnn(gated.unsqueeze(1))


class _TokenModel(nn.Module):
    """Integer inputs: token ids (int64) into an embedding table, mean-pooled, a classifier."""

    def __init__(self, vocab: int = 100, dim: int = 16) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(vocab, dim), nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(1))


class _BertEncoder(nn.Module):
    """A BERT-style text encoder (token ids in, hidden states out): token + position embeddings, then post-norm
    layers of multi-head self-attention (Linear q/k/v, MatMul, Softmax, MatMul, Linear) and a GELU feed-forward
    (4x hidden), each wrapped in a residual add and a LayerNorm (at opset 13 exported as ReduceMean / Pow / Sqrt
    arithmetic, as older exports carry it). No attention mask: every token attends to every token."""

    def __init__(self, vocab: int = 1000, hidden: int = 64, layers: int = 4, heads: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.tokens, self.positions = nn.Embedding(vocab, hidden), nn.Parameter(torch.randn(1, seq, hidden) * 0.02)
        self.norm = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "qkv": nn.Linear(hidden, 3 * hidden),
                    "out": nn.Linear(hidden, hidden),
                    "norm1": nn.LayerNorm(hidden),
                    "ff1": nn.Linear(hidden, 4 * hidden),
                    "ff2": nn.Linear(4 * hidden, hidden),
                    "norm2": nn.LayerNorm(hidden),
                }
            )
            for _ in range(layers)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.tokens(ids) + self.positions)
        b, n, c = x.shape
        d = c // self.heads
        for layer in self.layers:
            q, k, v = layer["qkv"](x).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
            attn = torch.softmax(q @ k.transpose(-2, -1) * d**-0.5, dim=-1)
            x = layer["norm1"](x + layer["out"]((attn @ v).transpose(1, 2).reshape(b, n, c)))
            x = layer["norm2"](x + layer["ff2"](F.gelu(layer["ff1"](x))))
        return x


class _GruKws(nn.Module):
    """A keyword spotter over MFCC frames: two-layer GRU, the last step's state classified."""

    def __init__(self, features: int = 10, hidden: int = 24) -> None:
        super().__init__()
        self.gru, self.fc = nn.GRU(features, hidden, num_layers=2, batch_first=True), nn.Linear(hidden, 4)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(frames)[0][:, -1])


def detector_with_nms(size: int = 32, candidates: int = 16) -> onnx.ModelProto:
    """A detector exported with its post-processing (torchvision's detection models, YOLO "end2end" exports): a conv
    head's boxes and class scores, the top `candidates` anchors by best class score (TopK + Gather), then
    NonMaxSuppression, whose output has a data-dependent length. TVM's TopK / argsort call the TVM runtime's
    tvm.contrib.sort functions by name at run time, so this also checks the deployed runtime has them."""
    rng = np.random.default_rng(0)
    anchors, classes = (size // 4) ** 2, 2
    inits = [
        numpy_helper.from_array(a, n)
        for n, a in (
            ("w", rng.normal(0, 0.3, (4 + classes, 3, 3, 3)).astype(np.float32)),
            ("head_shape", np.array([1, 4 + classes, anchors], np.int64)),
            ("k", np.array([candidates], np.int64)),
            ("box_lo", np.array([0], np.int64)),
            ("box_hi", np.array([4], np.int64)),
            ("cls_hi", np.array([4 + classes], np.int64)),
            ("axis1", np.array([1], np.int64)),
            ("scale", np.array(float(size), np.float32)),
            ("max_out", np.array([8], np.int64)),
            ("iou", np.array([0.5], np.float32)),
            ("score_min", np.array([0.3], np.float32)),
        )
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["image", "w"], ["head"], kernel_shape=[3, 3], strides=[4, 4], pads=[1, 1, 1, 1]),
        node("Reshape", ["head", "head_shape"], ["flat"]),
        node("Slice", ["flat", "box_lo", "box_hi", "axis1"], ["box_raw"]),
        node("Sigmoid", ["box_raw"], ["box_unit"]),
        node("Mul", ["box_unit", "scale"], ["box_px"]),
        node("Transpose", ["box_px"], ["boxes_all"], perm=[0, 2, 1]),  # [1, anchors, 4] corners
        node("Slice", ["flat", "box_hi", "cls_hi", "axis1"], ["cls_raw"]),
        node("Sigmoid", ["cls_raw"], ["scores_all"]),
        node("ReduceMax", ["scores_all"], ["best"], axes=[1], keepdims=0),
        node("TopK", ["best", "k"], ["top_scores", "top_idx"], axis=1),
        node("Squeeze", ["top_idx", "box_lo"], ["idx"]),
        node("Gather", ["boxes_all", "idx"], ["boxes"], axis=1),
        node("Gather", ["scores_all", "idx"], ["scores"], axis=2),
        node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_min"], ["selected"]),
    ]
    graph = helper.make_graph(
        nodes,
        "detector_with_nms",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, size, size])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, candidates, 4]),
            helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, [1, candidates]),
            helper.make_tensor_value_info("selected", TensorProto.INT64, ["detections", 3]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def segnet_unpool(size: int = 16) -> onnx.ModelProto:
    """A SegNet / ENet decoder step: MaxPool's argmax indices carried to MaxUnpool (torch 2.13 cannot trace
    max_unpool2d for export, so written with onnx.helper as older exports have it)."""
    rng = np.random.default_rng(0)
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "w1"], ["c"], pads=[1] * 4),
        node("Relu", ["c"], ["r"]),
        node("MaxPool", ["r"], ["p", "idx"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["p", "w2"], ["q"], pads=[1] * 4),
        node("MaxUnpool", ["q", "idx"], ["u"], kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["u", "w3"], ["mask"], pads=[1] * 4),
    ]
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
        for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)), ("w3", (2, 8, 3, 3)))
    ]
    graph = helper.make_graph(
        nodes,
        "segnet_unpool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2, size, size])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _torch_onnx(
    module: nn.Module, example: torch.Tensor, opset: int, input_name: str, outputs: list[str]
) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    for m in module.modules():  # non-trivial BN statistics, so folding them is tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            buf,
            opset_version=opset,
            dynamo=False,
            input_names=[input_name],
            output_names=outputs,
            dynamic_axes={input_name: {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
        )
    return onnx.load_from_string(buf.getvalue())


def build(name: str, size: int | None = None, opset: int = 13, hidden: int | None = None) -> onnx.ModelProto:
    """Corpus model `name` at test size (or `size`: the image side, the audio length, the text width, the frames;
    `hidden`: the recurrent models' state size)."""
    torch.manual_seed(0)
    if name == "tf_classifier":
        return _tf_classifier(size or 32, opset)
    if name == "yolo_like":
        return _torch_onnx(_YoloLike(), torch.rand(1, 3, size or 64, size or 64), opset, "images", ["boxes", "scores"])
    if name == "ocr_detector":
        return _torch_onnx(_OcrDetector(), torch.rand(1, 3, size or 64, size or 64), opset, "x", ["prob"])
    if name == "crnn":
        return _torch_onnx(_Crnn(hidden or 32), torch.rand(1, 1, 32, size or 32), opset, "image", ["log_probs"])
    if name == "audio_cnn":
        return _torch_onnx(_AudioCnn(), torch.randn(1, 1, size or 4000), opset, "wave", ["scores"])
    if name == "token_model":
        return _torch_onnx(_TokenModel(), torch.randint(0, 100, (1, size or 16)), opset, "ids", ["logits"])
    if name == "bert_encoder":
        seq = size or 16
        return _torch_onnx(
            _BertEncoder(hidden=hidden or 64, seq=seq), torch.randint(0, 1000, (1, seq)), opset, "ids", ["hidden"]
        )
    if name == "gru_kws":
        return _torch_onnx(_GruKws(hidden=hidden or 24), torch.randn(1, size or 10, 10), opset, "frames", ["scores"])
    raise KeyError(name)


CORPUS = ("tf_classifier", "yolo_like", "ocr_detector", "crnn", "audio_cnn", "token_model", "gru_kws")
TRANSFORMERS = ("bert_encoder",)  # beside CORPUS: tested by its own tests (test_realworld.py), timed by the benches
# What a user passes to fix the dynamic batch these exports have (tf2onnx's 'unk__1', torch's 'batch').
INPUT_NAMES = {
    "tf_classifier": "input_1",
    "yolo_like": "images",
    "ocr_detector": "x",
    "crnn": "image",
    "audio_cnn": "wave",
    "token_model": "ids",
    "gru_kws": "frames",
    "bert_encoder": "ids",
}
