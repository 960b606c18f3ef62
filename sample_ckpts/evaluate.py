"""Print a sample network's loss in training and in inference mode, restored from a checkpoint.

    python sample_ckpts/evaluate.py SAMPLE_FOLDER [PREFIX]

PREFIX defaults to SAMPLE_FOLDER/model.ckpt; its ``.meta`` is imported, the variables
the checkpoint holds are restored, the others keep their initializers (as a user's
restore would leave them). Tensor names come from SAMPLE_FOLDER/info.json. Used by
``make demo`` to show the seed's symptom before and after ``ckptdoctor repair``.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(folder: str, prefix: str | None = None) -> None:
    import numpy as np

    from ckptdoctor.tfcompat import import_tensorflow

    tf = import_tensorflow()
    prefix = prefix or os.path.join(folder, "model.ckpt")
    with open(os.path.join(folder, "info.json")) as f:
        info = json.load(f)
    X, y = np.load(os.path.join(folder, "X.npy")), np.load(os.path.join(folder, "y.npy"))
    g = tf.Graph()
    with g.as_default(), tf.compat.v1.Session(graph=g) as sess:
        tf.compat.v1.train.import_meta_graph(prefix + ".meta", clear_devices=True)
        sess.run(tf.compat.v1.global_variables_initializer())
        stored = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
        tf.compat.v1.train.Saver({v.op.name: v for v in g.get_collection("variables") if v.op.name in stored}).restore(
            sess, prefix
        )
        feed = {info["input"]: X, info["target"]: y}
        train = sess.run(info["loss"], {**feed, info["training_flag"]: True})
        infer = sess.run(info["loss"], {**feed, info["training_flag"]: False})
    print(f"{prefix}: training-mode error {train:.3g}, inference-mode error {infer:.3g} ({infer / train:.3g}x)")


if __name__ == "__main__":
    main(*sys.argv[1:])
