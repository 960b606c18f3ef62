"""What a Keras model config says, read as JSON (no Keras import): its layers, nested models' ones by path.

Layer names are unique within one model only, so a layer inside nested models is
named by its path from the top model (``backbone/block/bn2``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ConfigLayer",
    "BN_CLASSES",
    "MODEL_CLASSES",
    "CODE_CLASSES",
    "config_layers",
    "lambda_layers",
    "model_inputs",
]

#: Layer classes whose moving statistics ckptdoctor checks and repairs.
BN_CLASSES = frozenset({"BatchNormalization", "SyncBatchNormalization", "BatchNormalizationV1", "BatchNormalizationV2"})
#: Model classes whose config nests layers.
MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
#: Layer classes whose code runs from the file when loaded.
CODE_CLASSES = frozenset({"Lambda"})


@dataclass(frozen=True)
class ConfigLayer:
    """One layer of the model config."""

    name: str
    class_name: str
    config: dict
    depth: int  # 0 for the top model's layers, 1 inside a nested model...
    path: str = ""  # names from the top model down, joined by "/": "backbone/block/bn2"
    parent: str = ""  # the enclosing nested model's path ("" for the top model's layers)
    item: dict | None = field(default=None, compare=False, repr=False)  # the layer's whole config entry

    @property
    def trainable(self) -> bool:
        return bool(self.config.get("trainable", True))

    def bn_weights(self) -> list[str] | None:
        """A BN layer's weights in its variable order, from its config (None for other classes).

        The one rule kept without Keras: BN layers are what ckptdoctor checks and repairs, so their
        weights must be named even where Keras is not installed to say what a layer stores.
        """
        if self.class_name not in BN_CLASSES:
            return None
        c = self.config
        # renorm=True adds its own statistics after the moving ones (Keras 3 and tf-keras alike).
        return (
            (["gamma"] if c.get("scale", True) else [])
            + (["beta"] if c.get("center", True) else [])
            + ["moving_mean", "moving_variance"]
            + (["moving_stddev", "renorm_mean", "renorm_stddev"] if c.get("renorm", False) else [])
        )


def config_layers(config: dict | None, depth: int = 0, parent: str = "") -> list[ConfigLayer]:
    """Every layer of a model config, nested models' layers (at any depth) after the model itself.

    A layer's ``path`` joins the names of the nested models that hold it and its own
    (``backbone/block/bn2``): names are unique within one model, not across nested ones.
    """
    if not config:
        return []
    inner = config.get("config", config)
    out = []
    for item in inner.get("layers", []) or []:
        cls = item.get("class_name", "")
        cfg = item.get("config", {}) or {}
        name = cfg.get("name") or item.get("name") or ""
        path = f"{parent}/{name}" if parent else name
        out.append(ConfigLayer(name, cls, cfg, depth, path, parent, item))
        if cls in MODEL_CLASSES or "layers" in cfg:
            out.extend(config_layers(item, depth + 1, path))
    return out


def lambda_layers(config: dict | None) -> list[str]:
    """Names of the layers whose Python code would run when the model is loaded."""
    return [layer.name for layer in config_layers(config) if layer.class_name in CODE_CLASSES]


def model_inputs(config: dict | None) -> list[str]:
    """The model's input names, in call order (from ``input_layers``; Sequential: its InputLayer)."""
    if not config:
        return []
    inner = config.get("config", config)
    spec = inner.get("input_layers")
    if spec:
        if isinstance(spec[0], str):  # Keras 3 writes a single input as ["x", 0, 0]
            spec = [spec]
        return [s[0] for s in spec]
    for layer in config_layers(config):
        if layer.class_name == "InputLayer":
            return [layer.name]
    return []
