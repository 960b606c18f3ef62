"""SavedModel directories of every kind ``inspect`` reads (run in a subprocess, one per Keras).

    python savedmodel_inspect_builders.py {tfkeras,keras3} ROOT

tfkeras (TF_USE_LEGACY_KERAS=1) writes:
  ROOT/functional   tf-keras Functional model, BN layers ``bn_a`` and ``bn_b`` and ``bn_frozen``
                    (trainable=False from the start), trained a few steps,
                    ``model.save(dir, save_format="tf")`` (has keras_metadata.pb)
  ROOT/untrained    the same architecture never trained: statistics at their initial values
  ROOT/nested       tf-keras Functional holding a Functional ``backbone`` (BN ``bn_in``) and a
                    Sequential ``frozen`` (BN ``bn_f``, trainable=False from the start), BN ``bn_top``
  ROOT/subclassed   a subclassed tf-keras model (BN layers ``norm_in``, ``norm_out``), trained,
                    written by ``tf.saved_model.save`` (no keras_metadata.pb)
  ROOT/module       a ``tf.Module`` with hand-made BN variables ``block/{gamma,beta,moving_mean,
                    moving_variance}`` (trained values), written by ``tf.saved_model.save``
  ROOT/custom      a ``tf.Module`` whose BN variables have custom names (``stem/running_avg``...)
                    used by a ``FusedBatchNormV3`` op, never updated (at their initial values)
  ROOT/tf1          a TF1 SavedModel (``SavedModelBuilder``, no object graph), BN ``tf1_bn``
                    at its initial values
  ROOT/stripped     ROOT/functional whose bundle was rewritten by ``SaveV2`` without layer
                    ``bn_b``'s moving mean and variance, the kernel of ``head`` and one Adam
                    slot, and with a tensor ``extra/.ATTRIBUTES/VARIABLE_VALUE`` added
                    (a damaged copy)
keras3 writes:
  ROOT/export       a Keras 3 model (BN layers ``bn_x``, ``bn_y``, ``bn_frozen`` frozen from the
                    start), trained, ``model.export(dir)``
"""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if sys.argv[1] == "tfkeras":
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402

RNG = np.random.default_rng(3)
X = (RNG.normal(size=(128, 6)) * 3 + 2).astype("float32")
Y = (X[:, :1] * 0.5).astype("float32")


def functional(K, train):
    L = K.layers
    inp = K.Input((6,), name="features")
    h = L.BatchNormalization(name="bn_a")(L.Dense(8, name="dense_a")(inp))
    h = L.Activation("relu")(h)
    h = L.BatchNormalization(name="bn_b")(L.Dense(4, name="dense_b")(h))
    h = L.BatchNormalization(name="bn_frozen", trainable=False)(h)
    model = K.Model(inp, L.Dense(1, name="head")(h))
    model.compile(optimizer="adam", loss="mse")
    if train:
        model.fit(X, Y, batch_size=32, epochs=2, verbose=0)
    return model


def build_tfkeras(root):
    import tensorflow as tf
    import tf_keras as K

    K.utils.set_random_seed(0)
    functional(K, train=True).save(os.path.join(root, "functional"), save_format="tf")
    functional(K, train=False).save(os.path.join(root, "untrained"), save_format="tf")

    # Nested models: a Functional backbone and a Sequential frozen from the start inside a Functional.
    L = K.layers
    b_in = K.Input((6,), name="bb_in")
    backbone = K.Model(b_in, L.BatchNormalization(name="bn_in")(L.Dense(8, name="d_in")(b_in)), name="backbone")
    frozen = K.Sequential([L.Dense(8, name="d_f"), L.BatchNormalization(name="bn_f")], name="frozen")
    frozen.trainable = False
    inp = K.Input((6,), name="features")
    h = L.BatchNormalization(name="bn_top")(frozen(backbone(inp)))
    nested = K.Model(inp, L.Dense(1, name="head")(h))
    nested.compile(optimizer="adam", loss="mse")
    nested.fit(X, Y, batch_size=32, epochs=2, verbose=0)
    nested.save(os.path.join(root, "nested"), save_format="tf")

    class Subclassed(K.Model):
        def __init__(self):
            super().__init__()
            self.norm_in = K.layers.BatchNormalization(name="norm_in")
            self.hidden = K.layers.Dense(5, name="hidden")
            self.norm_out = K.layers.BatchNormalization(name="norm_out")
            self.head = K.layers.Dense(1, name="head")

        def call(self, x, training=False):
            h = self.norm_out(self.hidden(self.norm_in(x, training=training)), training=training)
            return self.head(h)

    sub = Subclassed()
    sub.compile(optimizer="adam", loss="mse")
    sub.fit(X, Y, batch_size=32, epochs=2, verbose=0)
    sub(X[:2])
    tf.saved_model.save(sub, os.path.join(root, "subclassed"))

    class Block(tf.Module):
        def __init__(self):
            super().__init__(name="block_module")
            with tf.name_scope("block"):
                self.gamma = tf.Variable(tf.ones([3]), name="gamma")
                self.beta = tf.Variable(tf.zeros([3]), name="beta")
                self.moving_mean = tf.Variable([0.5, -1.0, 2.0], name="moving_mean", trainable=False)
                self.moving_variance = tf.Variable([1.5, 0.25, 3.0], name="moving_variance", trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def __call__(self, x):
            return tf.nn.batch_normalization(x, self.moving_mean, self.moving_variance, self.beta, self.gamma, 1e-3)

    tf.saved_model.save(Block(), os.path.join(root, "module"))

    class Custom(tf.Module):
        """BN with names no rule knows, found only by its FusedBatchNormV3 op."""

        def __init__(self):
            super().__init__(name="custom")
            with tf.name_scope("stem"):
                self.scale_w = tf.Variable(tf.ones([3]), name="scale_w")
                self.shift_b = tf.Variable(tf.zeros([3]), name="shift_b")
                self.running_avg = tf.Variable(tf.zeros([3]), name="running_avg", trainable=False)
                self.running_var = tf.Variable(tf.ones([3]), name="running_var", trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)])
        def __call__(self, x):
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.scale_w, self.shift_b, self.running_avg, self.running_var, is_training=False
            )
            return y

    tf.saved_model.save(Custom(), os.path.join(root, "custom"))

    # A TF1 SavedModel (SavedModelBuilder): no object graph, TF1 variable names in the bundle.
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 4, 4, 2], name="x")
        y = tf.compat.v1.layers.batch_normalization(x, training=False, name="tf1_bn")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(os.path.join(root, "tf1"))
            builder.add_meta_graph_and_variables(
                sess,
                ["serve"],
                signature_def_map={
                    "serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
                },
            )
            builder.save()

    # A damaged copy: bn_b's moving statistics, the head's kernel and one Adam slot deleted from
    # the bundle, and a tensor no variable owns added; everything else as written.
    src, dst = os.path.join(root, "functional"), os.path.join(root, "stripped")
    shutil.copytree(src, dst)
    prefix = os.path.join(dst, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    dropped = [
        f"layer_with_weights-{i}/{w}/.ATTRIBUTES/VARIABLE_VALUE"
        for i, w in ((3, "moving_mean"), (3, "moving_variance"), (5, "kernel"))
    ]
    dropped.append("optimizer/_variables/1/.ATTRIBUTES/VARIABLE_VALUE")
    names = sorted(set(reader.get_variable_to_shape_map()) - set(dropped))
    assert len(names) == len(reader.get_variable_to_shape_map()) - len(dropped), names
    values = [reader.get_tensor(n) for n in names]
    names.append("extra/.ATTRIBUTES/VARIABLE_VALUE")
    values.append(np.arange(3, dtype=np.float32))
    for f in os.listdir(os.path.dirname(prefix)):
        os.remove(os.path.join(os.path.dirname(prefix), f))
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=[tf.constant(v) for v in values]
    )


def build_keras3(root):
    import keras as K

    K.utils.set_random_seed(0)
    L = K.layers
    inp = K.Input((6,), name="features")
    h = L.BatchNormalization(name="bn_x")(L.Dense(8, name="dense_x")(inp))
    h = L.BatchNormalization(name="bn_y")(L.Dense(4, name="dense_y")(L.Activation("relu")(h)))
    h = L.BatchNormalization(name="bn_frozen", trainable=False)(h)
    model = K.Model(inp, L.Dense(1, name="head")(h))
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, Y, batch_size=32, epochs=2, verbose=0)
    model.export(os.path.join(root, "export"), verbose=False)


if __name__ == "__main__":
    os.makedirs(sys.argv[2], exist_ok=True)
    {"tfkeras": build_tfkeras, "keras3": build_keras3}[sys.argv[1]](sys.argv[2])
