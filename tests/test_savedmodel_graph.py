"""The graph in ``saved_model.pb`` as ``--graph``: BN layers found by structure inside the traced functions.

SavedModels are written by Keras 3 ``model.export`` (variables under ``variables/N`` and
``_all_variables/N``, two keys per variable) and by ``tf.saved_model.save`` of a subclassed
tf-keras model (keys ``variables/N``): neither key says which layer a tensor belongs to.
The builder records each BN layer's moving statistics from the live model, so the test
checks that the keys ckptdoctor assigns to a layer hold that layer's values.
"""

import json
import sys

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, run_in_parallel, tf_reader_values

_BUILD = r"""
import json, os, sys
which, out = sys.argv[1], sys.argv[2]
if which == "tfkeras":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras as K
else:
    import keras as K
import numpy as np
K.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 5)).astype("float32") * 3 + 2
np.save(os.path.join(out, "X.npy"), x)
stats = {}

def record(name, layers):
    for layer in layers:
        stats[f"{name}/{layer.name}"] = {"mean": np.asarray(layer.moving_mean).tolist(),
                                         "var": np.asarray(layer.moving_variance).tolist()}

if which == "keras3":
    def model():
        inp = K.Input((5,), name="features")
        h = K.layers.BatchNormalization(momentum=0.9, name="bn1")(K.layers.Dense(8, name="d1")(inp))
        h = K.layers.Activation("relu")(h)
        h = K.layers.BatchNormalization(momentum=0.9, name="bn2")(K.layers.Dense(6, name="d2")(h))
        return K.Model(inp, K.layers.Dense(1, name="head")(h))
    m = model()
    m.compile(K.optimizers.Adam(0.03), "mse")
    m.fit(x, x[:, :1] * 2, epochs=3, batch_size=64, verbose=0)
    m.export(os.path.join(out, "trained"))
    record("trained", [m.get_layer("bn1"), m.get_layer("bn2")])
    fresh = model()  # never trained: statistics at their initial values
    fresh.export(os.path.join(out, "fresh"))
    record("fresh", [fresh.get_layer("bn1"), fresh.get_layer("bn2")])
else:
    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.d = K.layers.Dense(4)
            self.bn = K.layers.BatchNormalization(momentum=0.9)
            self.h = K.layers.Dense(1)
        def call(self, x, training=None):
            return self.h(self.bn(self.d(x), training=training))
    m = Net()
    m.compile(K.optimizers.Adam(0.03), "mse")
    m.fit(x, x[:, :1], epochs=2, batch_size=64, verbose=0)
    K.models.save_model(m, os.path.join(out, "subclassed"), save_format="tf")
    record("subclassed", [m.bn])
with open(os.path.join(out, "stats.json"), "w") as f:
    json.dump(stats, f)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("smgraph")
    for which in ("keras3", "tfkeras"):
        (root / which).mkdir()
    run_in_parallel({w: [sys.executable, "-c", _BUILD, w, root / w] for w in ("keras3", "tfkeras")})
    stats = {}
    for which in ("keras3", "tfkeras"):
        stats.update(json.loads((root / which / "stats.json").read_text()))
    return root, stats


def inspect_json(directory):
    proc = run_cli("inspect", directory / "variables" / "variables", "--graph", directory, "--format", "json")
    return proc, json.loads(proc.stdout)


@pytest.mark.parametrize(
    "which,name,layers", [("keras3", "trained", {"bn1", "bn2"}), ("tfkeras", "subclassed", {"net/batch_normalization"})]
)
def test_bn_layers_found_by_structure_hold_their_own_statistics(saved, which, name, layers):
    root, stats = saved
    directory = root / which / name
    proc, doc = inspect_json(directory)
    assert proc.returncode == 0, proc.stderr
    assert {row["layer"] for row in doc["bn_layers"]} == layers
    truth = tf_reader_values(str(directory / "variables" / "variables"))
    for row in doc["bn_layers"]:
        assert row["status"] == "ok"
        want = stats[f"{name}/{row['layer'].rsplit('/', 1)[-1]}"]
        np.testing.assert_array_equal(truth[row["moving_mean"]], np.float32(want["mean"]))
        np.testing.assert_array_equal(truth[row["moving_variance"]], np.float32(want["var"]))
    # Every tensor of the bundle belongs to a variable the graph saves, aliases included.
    codes = {f["code"] for f in doc["findings"]}
    assert not codes & {"unexpected-in-checkpoint", "missing-in-checkpoint", "bn-stats-missing"}
    assert all(t["in_graph"] for t in doc["tensors"] if t["name"] != "_CHECKPOINTABLE_OBJECT_GRAPH")


def test_untrained_export_is_at_init(saved):
    root, _ = saved
    proc, doc = inspect_json(root / "keras3" / "fresh")
    assert proc.returncode == 1
    assert {row["layer"]: row["status"] for row in doc["bn_layers"]} == {"bn1": "at-init", "bn2": "at-init"}
    assert sum(f["code"] == "bn-stats-at-init" for f in doc["findings"]) == 2


def test_saved_model_pb_path_works_as_graph_too(saved):
    root, _ = saved
    directory = root / "keras3" / "trained"
    proc = run_cli("inspect", directory / "variables" / "variables", "--graph", directory / "saved_model.pb")
    assert proc.returncode == 0 and "bn1" in proc.stdout and "bn2" in proc.stdout


def test_repair_of_a_serving_graph_says_what_to_do(saved, tmp_path):
    root, _ = saved
    directory = root / "keras3" / "trained"
    proc = run_cli(
        "repair",
        directory / "variables" / "variables",
        "--graph",
        directory / "saved_model.pb",
        "--data",
        root / "keras3" / "X.npy",
        "--method",
        "sequential",
        "--input",
        "serve_features:0",
        "--output",
        tmp_path / "out",
    )
    assert_one_line_error(proc, "inside functions", "repair the model it was exported from")
    assert not list(tmp_path.iterdir())
