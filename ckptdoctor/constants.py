"""TensorFlow's naming and graph facts, in one place."""

import re

#: The version of ckptdoctor (the package metadata reads it from here).
VERSION = "0.1.0"

#: Suffixes of BN variables (tf.compat.v1.layers, tf.keras): used only without a graph.
BN_MOVING_MEAN = "moving_mean"
BN_MOVING_VARIANCE = "moving_variance"
BN_GAMMA = "gamma"
BN_BETA = "beta"

#: TF2 object-based checkpoints store a variable's value under this attribute.
TF2_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

#: Optimizer slot and counter names (TF1 optimizers and TF2 ``.OPTIMIZER_SLOT``).
OPTIMIZER_SLOT_PATTERN = re.compile(
    r"(/(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad|Adadelta|Adadelta_\d+|Ftrl|Ftrl_\d+|"
    r"ExponentialMovingAverage)$)|(^|/)(beta1_power|beta2_power)$|\.OPTIMIZER_SLOT/"
    r"|^optimizer/"
)
STEP_PATTERN = re.compile(r"(^|/)(global_step|save_counter|iter|iterations|step)(/\.ATTRIBUTES/VARIABLE_VALUE)?$")

#: Graph op types.
VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
PASS_THROUGH_OPS = frozenset(
    {
        "Identity",
        "ReadVariableOp",
        "Switch",
        "RefSwitch",
        "Enter",
        "RefEnter",
        "Merge",
        "RefMerge",
        "Snapshot",
        "RefIdentity",
        "Reshape",
        "IdentityN",
    }
)
IF_OPS = frozenset({"If", "StatelessIf"})
CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
FUSED_BN_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
ASSIGN_OPS = frozenset({"AssignSub", "AssignSubVariableOp", "Assign", "AssignVariableOp", "AssignMovingAvg"})
SAVE_OPS = frozenset({"SaveV2", "Save", "SaveSlices"})
#: Ops that hand a graph its data without a placeholder (tf.data iterators, queues): their outputs can be fed.
DATA_SOURCE_OPS = frozenset(
    {
        "IteratorGetNext",
        "IteratorGetNextSync",
        "QueueDequeueV2",
        "QueueDequeueManyV2",
        "QueueDequeueUpToV2",
        "QueueDequeue",
        "QueueDequeueMany",
        "QueueDequeueUpTo",
    }
)
#: Ops whose output is random: upstream of a BN input in a graph fixed to training, they are dropout or noise.
RANDOM_OPS = frozenset(
    {
        "RandomUniform",
        "RandomStandardNormal",
        "TruncatedNormal",
        "StatelessRandomUniformV2",
        "StatelessRandomNormalV2",
        "StatelessRandomUniform",
        "StatelessRandomNormal",
        "RandomUniformInt",
        "StatelessRandomUniformFullIntV2",
    }
)

#: SavedModel directories: the graph, tf-keras' model description, the variables bundle.
SAVED_MODEL_PB = "saved_model.pb"
KERAS_METADATA_PB = "keras_metadata.pb"
SAVED_MODEL_VARIABLES = "variables/variables"
#: tf-keras tracks the i-th layer of ``model.layers`` that has weights under this name.
KERAS_LAYER_WITH_WEIGHTS = "layer_with_weights-{}"
#: A legacy full-model ``.h5`` keeps its layers' weights under this group (``save_weights`` files at the root).
KERAS_LEGACY_WEIGHTS_ROOT = "model_weights/"
