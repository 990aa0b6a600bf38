"""--max-drop: the accuracy floor a deployed lower-precision artifact must keep. The metric is measured on the
validation data through the artifact itself (precision.deployed.RunnerModule); its drop is counted from the dense
FP32 model, in the metric's units (percentage points for top1). A target's quantizer uses it to put the most
sensitive layers back in higher precision until the artifact fits (ov-cpu: NNCF's accuracy control; ort-cpu: a
measured per-layer exclusion)."""
from __future__ import annotations

from dataclasses import dataclass, field

from prune2deploy.precision.deployed import RunnerModule


@dataclass
class AccuracyFloor:
    metric: object  # data.metrics.Metric
    val: list  # validation batches [(ExampleInputs, labels)]
    batch: int  # the exported graph's static batch size
    dense_value: float  # the dense FP32 model's metric on `val`
    max_drop: float
    fp32_values: dict = field(default_factory=dict)  # model name -> its torch FP32 metric on `val`
    shapes: list | None = None  # the exported graph's input shapes (token inputs are fitted to them)

    def measure(self, runner, batches: list | None = None) -> float:
        """The metric of a runner (`run(feed) -> outputs`) on the validation batches (or `batches`)."""
        return self.metric(RunnerModule(runner, self.batch, self.shapes), self.val if batches is None else batches)

    def drop(self, value: float) -> float:
        return self.metric.drop(self.dense_value, value)

    def fits(self, value: float) -> bool:
        return self.drop(value) <= self.max_drop + 1e-9

    def budget(self, name: str) -> float:
        """How far the quantized `name` may fall below its own FP32 metric and still fit (negative: it cannot,
        its FP32 model is already below the floor)."""
        return self.max_drop - self.drop(self.fp32_values.get(name, self.dense_value))

    def per_batch(self, runner, batches: list) -> tuple[float, list[float]]:
        """(the metric over `batches`, one value per batch): NNCF's accuracy control ranks layers by the latter."""
        values = [self.measure(runner, [b]) for b in batches]
        sizes = [int(b[0].tensors()[0].shape[0]) for b in batches]
        return sum(v * n for v, n in zip(values, sizes)) / max(1, sum(sizes)), values
