"""Heavy imports happen only when needed: ml_dtypes (0.4 s) only for a tensor of one of its dtypes."""

import json
import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample_ckpts" / "convnet"

_LIST = (
    "import contextlib, io, json, sys\n"
    "from ckptdoctor.cli import main\n"
    "out = io.StringIO()\n"
    "with contextlib.redirect_stdout(out):\n"
    "    code = main(['inspect', sys.argv[1], '--graph', 'False', '--format', 'json'])\n"
    "print(json.dumps({'code': code, 'ml_dtypes': 'ml_dtypes' in sys.modules,\n"
    "                  'tensorflow': 'tensorflow' in sys.modules, 'asyncio': 'asyncio' in sys.modules,\n"
    "                  'report': json.loads(out.getvalue())}))\n"
)


def _inspect(path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _LIST, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_float32_checkpoint_lists_without_ml_dtypes():
    result = _inspect(SAMPLE)
    assert result["code"] == 0 and result["report"]["tensors"]
    assert not result["ml_dtypes"] and not result["tensorflow"]
    assert not result["asyncio"]  # fire's import of it (80 ms) is stood in for (cli._import_fire)


def test_a_later_import_of_asyncio_gets_the_real_module():
    code = (
        "import sys\n"
        "from ckptdoctor.cli import _import_fire\n"
        "fire = _import_fire()\n"
        "assert 'asyncio' not in sys.modules\n"
        "import asyncio as real\n"
        "assert type(real).__name__ == 'module' and real.run is not None\n"
        "async def co(): return 7\n"
        "assert fire.inspectutils.IsCoroutineFunction(co) and not fire.inspectutils.IsCoroutineFunction(len)\n"
        "assert fire.core.asyncio.get_event_loop_policy() is real.get_event_loop_policy()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_bfloat16_tensor_loads_ml_dtypes_and_reads_right(tmp_path):
    code = (
        "import sys, tensorflow as tf\n"
        "v = tf.Variable(tf.constant([1.5, -2.0, 3.25], tf.bfloat16))\n"
        "tf.train.Checkpoint(v=v).write(sys.argv[1])\n"
    )
    prefix = tmp_path / "bf16"
    proc = subprocess.run([sys.executable, "-c", code, str(prefix)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = _inspect(prefix)
    [row] = [t for t in result["report"]["tensors"] if t["dtype"] == "bfloat16"]
    assert (row["min"], row["max"]) == (-2.0, 3.25)
    assert result["ml_dtypes"] and not result["tensorflow"]


_ALLOCATOR = (
    "import json, os\n"
    "from ckptdoctor.tfcompat import import_tensorflow\n"
    "tf = import_tensorflow()\n"
    "x = tf.ones((256, 256)) * 2.0\n"
    "try:\n"
    "    pooled = tf.config.experimental.get_memory_info('CPU:0')['peak'] >= x.numpy().nbytes\n"
    "except ValueError:\n"  # an allocator that keeps no statistics (TensorFlow's default, on some machines)
    "    pooled = False\n"
    "print(json.dumps([pooled, os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')]))\n"
)


def _pooled(**env) -> list:
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"} | env
    proc = subprocess.run([sys.executable, "-c", _ALLOCATOR], capture_output=True, text=True, timeout=300, env=environ)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tensorflow_runs_on_the_pooling_cpu_allocator_unless_the_caller_chose():
    assert _pooled() == [True, "true"]  # the BFC pool counts what it hands out
    # The caller's choice is what TensorFlow sees. Whether its default allocator keeps statistics differs
    # between machines (it did here on 2026-12-04), so only the setting is checked.
    assert _pooled(TF_CPU_ALLOCATOR_USE_BFC="false")[1] == "false"


# Imports TensorFlow (and Keras 3) the way repairs do, counting the collector's runs during each import.
_COLLECTIONS = (
    "import gc, json, sys\n"
    "if sys.argv[1] == 'off':\n"
    "    gc.disable()\n"
    "runs = []\n"
    "gc.callbacks.append(lambda phase, info: runs.append(info['generation']) if phase == 'start' else None)\n"
    "from ckptdoctor.tfcompat import import_tensorflow\n"
    "from ckptdoctor.runtime.keras_model import import_keras\n"
    "start = len(runs)\n"
    "import_tensorflow()\n"
    "after_tf = len(runs) - start\n"
    "import_keras(False)\n"
    "assert 'tensorflow' in sys.modules and 'keras' in sys.modules\n"
    "before = len(runs) - start\n"
    "gc.collect()\n"
    "print(json.dumps([after_tf, before, gc.isenabled(), gc.get_freeze_count(), len(gc.get_objects())]))\n"
)


def test_tensorflow_and_keras_imports_run_no_collection_and_leave_their_objects_frozen():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    got = subprocess.run(
        [sys.executable, "-c", _COLLECTIONS, "on"], capture_output=True, text=True, timeout=300, env=env
    )
    assert got.returncode == 0, got.stderr[-2000:]
    after_tf, after_keras, enabled, frozen, tracked = json.loads(got.stdout.strip().splitlines()[-1])
    # Without the pause, these imports make dozens of collections (full ones among them, 0.5 s here).
    assert after_tf == 0 and after_keras == 0
    assert enabled  # the collector is on again
    # What the imports made is frozen: a full collection walks only what came after (a few hundred objects).
    assert frozen > 500_000 and tracked < frozen / 50


def test_a_caller_who_disabled_the_collector_keeps_it_disabled():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    got = subprocess.run(
        [sys.executable, "-c", _COLLECTIONS, "off"], capture_output=True, text=True, timeout=300, env=env
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert json.loads(got.stdout.strip().splitlines()[-1])[2] is False
