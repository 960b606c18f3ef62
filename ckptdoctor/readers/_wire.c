/*
 * ckptdoctor.readers._wire: the canonical, well-formed cases of three hot decoders, at C speed.
 *
 * Optional: the package works without it (pure-Python fallback), and CKPTDOCTOR_PURE_PYTHON=1 turns it
 * off. Each function here returns a result only when its input is in the canonical form TensorFlow
 * writes and every check passes; on anything else it returns None (or, for the object graph, marks one
 * node as deferred) and the Python code in protowire.py / sstable.py decodes the input exactly as it
 * would without this module, raising its own errors. So results and errors are the Python code's, and
 * nothing here raises on bad input (only MemoryError on allocation failure).
 *
 * Every read is bounds-checked with size_t arithmetic that cannot overflow: lengths are compared with
 * the bytes left (len > end - pos), never added to a position first.
 *
 *   bundle_entry(buf, entry_type, shape_cache, shape_cache_limit)  ~ protowire.decode_bundle_entry
 *   block_entries(block, key_budget)                               ~ list(sstable.iter_block(block, ...))
 *   object_graph(buf, keys, node_type, value_name)                 ~ protowire._decode_object_graph
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ varints */

/*
 * One unsigned LEB128 varint at buf[*pos], which must end before `end`: 1 and the value, *pos moved past
 * it; 0 when protowire.read_varint would raise (truncated, longer than 10 bytes, above 2**64-1).
 * Redundant high zero bytes are accepted, as read_varint accepts them.
 */
static inline int
read_varint(const unsigned char *buf, size_t *pos, size_t end, uint64_t *out)
{
    size_t p = *pos;
    uint64_t result = 0;
    unsigned int shift = 0;
    for (;;) {
        if (p >= end)
            return 0;
        unsigned char b = buf[p++];
        uint64_t bits = (uint64_t)(b & 0x7F);
        if (shift == 63 && bits > 1)
            return 0; /* the 10th byte may only hold bit 63 */
        result |= bits << shift;
        if (b < 0x80) {
            *out = result;
            *pos = p;
            return 1;
        }
        shift += 7;
        if (shift >= 70)
            return 0;
    }
}

static inline uint32_t
load_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* An instance of a tuple subclass (a NamedTuple) holding `n` new references, as tuple.__new__(type, items)
 * makes it. Steals the references, also on failure. */
static PyObject *
make_typed_tuple(PyTypeObject *type, PyObject **items, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL)
            goto fail;
    }
    PyObject *res = type->tp_alloc(type, n);
    if (res == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(res, i, items[i]);
    return res;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static int
is_tuple_type(PyObject *t)
{
    return PyType_Check(t) && PyType_IsSubtype((PyTypeObject *)t, &PyTuple_Type);
}

/* ------------------------------------------------------------------------------------- bundle entry */

/*
 * A TensorShapeProto in the form `repeated (12 len Dim)`, each Dim empty or exactly `08 varint` with the
 * varint below 2**63: the tuple of dims (new reference). NULL without an exception set for any other form
 * (protowire._decode_shape decides), NULL with one on allocation failure.
 */
static PyObject *
decode_shape(const unsigned char *s, size_t n)
{
    size_t pos = 0, count = 0;
    while (pos < n) { /* pass 1: check the form and count the dims */
        uint64_t len, v;
        if (s[pos] != 0x12)
            return NULL;
        pos++;
        if (!read_varint(s, &pos, n, &len) || len > n - pos)
            return NULL;
        if (len != 0) {
            size_t p = pos, e = pos + (size_t)len;
            if (s[p] != 0x08)
                return NULL;
            p++;
            if (!read_varint(s, &p, e, &v) || p != e || (v >> 63) != 0)
                return NULL;
        }
        pos += (size_t)len;
        count++;
    }
    PyObject *dims = PyTuple_New((Py_ssize_t)count);
    if (dims == NULL || count == 0)
        return dims;
    pos = 0;
    for (size_t i = 0; i < count; i++) { /* pass 2: the form is known good */
        uint64_t len = 0, v = 0;
        pos++;
        read_varint(s, &pos, n, &len);
        if (len != 0) {
            size_t p = pos + 1;
            read_varint(s, &p, pos + (size_t)len, &v);
        }
        pos += (size_t)len;
        PyObject *d = PyLong_FromUnsignedLongLong(v);
        if (d == NULL) {
            Py_DECREF(dims);
            return NULL;
        }
        PyTuple_SET_ITEM(dims, (Py_ssize_t)i, d);
    }
    return dims;
}

/* The shape of field 0x12 at buf[start:start+len], through the cache as decode_bundle_entry uses it. New
 * reference; NULL without an exception: not canonical, defer; NULL with one: allocation failure. */
static PyObject *
cached_shape(const unsigned char *buf, size_t start, size_t len, PyObject *cache, Py_ssize_t limit)
{
    PyObject *key = PyBytes_FromStringAndSize((const char *)buf + start, (Py_ssize_t)len);
    if (key == NULL)
        return NULL;
    PyObject *shape = PyDict_GetItemWithError(cache, key); /* borrowed */
    if (shape != NULL) {
        Py_INCREF(shape);
        Py_DECREF(key);
        return shape;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    shape = decode_shape(buf + start, len);
    if (shape != NULL && PyDict_GET_SIZE(cache) < limit && PyDict_SetItem(cache, key, shape) < 0)
        Py_CLEAR(shape);
    Py_DECREF(key);
    return shape;
}

PyDoc_STRVAR(bundle_entry_doc,
             "bundle_entry(buf, entry_type, shape_cache, shape_cache_limit) -> entry_type | None\n\n"
             "protowire.decode_bundle_entry for the canonical encoding (one-byte tags 08 18 20 28 12 35,\n"
             "any order, last wins; no slices); None for anything else.");

static PyObject *
wire_bundle_entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "bundle_entry() takes 4 arguments");
        return NULL;
    }
    PyObject *bufobj = args[0], *entry_type = args[1], *cache = args[2];
    if (!PyBytes_CheckExact(bufobj) || !is_tuple_type(entry_type) || !PyDict_CheckExact(cache)
        || !PyLong_Check(args[3]))
        Py_RETURN_NONE;
    Py_ssize_t limit = PyLong_AsSsize_t(args[3]);
    if (limit == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(bufobj);
    size_t end = (size_t)PyBytes_GET_SIZE(bufobj), pos = 0;
    uint64_t dtype = 0, shard_id = 0, offset = 0, size = 0;
    uint32_t crc = 0;
    PyObject *shape = NULL; /* owned; NULL for () */

    while (pos < end) {
        unsigned char tag = buf[pos++];
        uint64_t v;
        switch (tag) {
        case 0x08:
        case 0x18:
        case 0x20:
        case 0x28:
            if (!read_varint(buf, &pos, end, &v))
                goto defer;
            if (tag == 0x08)
                dtype = v;
            else if (tag == 0x18)
                shard_id = v;
            else if (tag == 0x20)
                offset = v;
            else
                size = v;
            break;
        case 0x12: {
            if (!read_varint(buf, &pos, end, &v) || v > end - pos)
                goto defer;
            PyObject *s = cached_shape(buf, pos, (size_t)v, cache, limit);
            if (s == NULL) {
                if (PyErr_Occurred())
                    goto error;
                goto defer;
            }
            Py_XSETREF(shape, s);
            pos += (size_t)v;
            break;
        }
        case 0x35:
            if (end - pos < 4)
                goto defer;
            crc = load_u32le(buf + pos);
            pos += 4;
            break;
        default: /* slices (0x3A), other fields, multi-byte tags: the Python decoders */
            goto defer;
        }
    }
    if ((shard_id >> 63) != 0 || (offset >> 63) != 0 || (size >> 63) != 0)
        goto defer; /* negative int64: the Python code raises */

    PyObject *items[7];
    items[0] = PyLong_FromUnsignedLongLong(dtype);
    items[1] = shape != NULL ? shape : PyTuple_New(0);
    shape = NULL;
    items[2] = PyLong_FromUnsignedLongLong(shard_id);
    items[3] = PyLong_FromUnsignedLongLong(offset);
    items[4] = PyLong_FromUnsignedLongLong(size);
    items[5] = PyLong_FromUnsignedLong((unsigned long)crc);
    items[6] = PyTuple_New(0);
    return make_typed_tuple((PyTypeObject *)entry_type, items, 7);

defer:
    Py_XDECREF(shape);
    Py_RETURN_NONE;
error:
    Py_XDECREF(shape);
    return NULL;
}

/* ------------------------------------------------------------------------------------------- blocks */

PyDoc_STRVAR(block_entries_doc,
             "block_entries(block, key_budget) -> list[tuple[bytes, bytes]] | None\n\n"
             "list(sstable.iter_block(block, ...)), or None where iter_block would raise, or when the keys\n"
             "would total more than key_budget bytes (the Python generator then runs, with its own checks).");

static PyObject *
wire_block_entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "block_entries() takes 2 arguments");
        return NULL;
    }
    PyObject *blockobj = args[0];
    if (!PyBytes_CheckExact(blockobj) || !PyLong_Check(args[1]))
        Py_RETURN_NONE;
    Py_ssize_t budget_arg = PyLong_AsSsize_t(args[1]);
    if (budget_arg == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (budget_arg < 0)
        Py_RETURN_NONE;
    size_t budget = (size_t)budget_arg;
    const unsigned char *block = (const unsigned char *)PyBytes_AS_STRING(blockobj);
    size_t n = (size_t)PyBytes_GET_SIZE(blockobj);
    if (n < 4)
        Py_RETURN_NONE;
    size_t num_restarts = load_u32le(block + n - 4);
    if (num_restarts > (n - 4) / 4)
        Py_RETURN_NONE;
    if (num_restarts == 0)
        return PyList_New(0); /* LevelDB treats such a block as empty */
    size_t limit = n - 4 * (num_restarts + 1);
    if (load_u32le(block + limit) != 0)
        Py_RETURN_NONE;

    /* Pass 1: every check of iter_block, and the count and total size of the keys. */
    size_t pos = 0, prev_len = 0, count = 0, total = 0;
    while (pos < limit) {
        uint64_t shared, non_shared, value_len;
        if (!read_varint(block, &pos, limit, &shared) || !read_varint(block, &pos, limit, &non_shared)
            || !read_varint(block, &pos, limit, &value_len))
            Py_RETURN_NONE;
        if (shared > prev_len || non_shared > limit - pos || value_len > limit - pos - (size_t)non_shared)
            Py_RETURN_NONE;
        size_t key_len = (size_t)shared + (size_t)non_shared; /* <= prev_len + n: no overflow */
        if (key_len > budget - total)
            Py_RETURN_NONE;
        total += key_len;
        prev_len = key_len;
        pos += (size_t)non_shared + (size_t)value_len;
        count++;
    }

    /* Pass 2: the items; the layout is known good. */
    PyObject *list = PyList_New((Py_ssize_t)count);
    if (list == NULL)
        return NULL;
    PyObject *prev = NULL; /* borrowed: the previous key, owned by the list */
    pos = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t shared = 0, non_shared = 0, value_len = 0;
        read_varint(block, &pos, limit, &shared);
        read_varint(block, &pos, limit, &non_shared);
        read_varint(block, &pos, limit, &value_len);
        PyObject *key = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(shared + non_shared));
        if (key == NULL)
            goto error;
        char *k = PyBytes_AS_STRING(key);
        if (shared != 0)
            memcpy(k, PyBytes_AS_STRING(prev), (size_t)shared);
        memcpy(k + shared, block + pos, (size_t)non_shared);
        pos += (size_t)non_shared;
        PyObject *value = PyBytes_FromStringAndSize((const char *)block + pos, (Py_ssize_t)value_len);
        pos += (size_t)value_len;
        PyObject *item = value != NULL ? PyTuple_New(2) : NULL;
        if (item == NULL) {
            Py_DECREF(key);
            Py_XDECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(item, 0, key);
        PyTuple_SET_ITEM(item, 1, value);
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
        prev = key;
    }
    return list;
error:
    Py_DECREF(list); /* unfilled slots are NULL: list_dealloc skips them */
    return NULL;
}

/* ------------------------------------------------------------------------------------- object graph */

/* Canonical ObjectReference, as _decode_child's fast path takes it: 08 <node_id varint, < 2**31>
 * 12 <one-byte length> <local_name> ending exactly at b, b - a >= 4. */
static int
check_child(const unsigned char *buf, size_t a, size_t b, uint64_t *node_id, size_t *name_start)
{
    if (b - a < 4 || buf[a] != 0x08)
        return 0;
    size_t p = a + 1;
    uint64_t id;
    if (!read_varint(buf, &p, b, &id) || id >= ((uint64_t)1 << 31))
        return 0;
    if (b - p < 2 || buf[p] != 0x12 || buf[p + 1] >= 0x80 || b - (p + 2) != buf[p + 1])
        return 0;
    *node_id = id;
    *name_start = p + 2;
    return 1;
}

typedef struct {
    size_t name_a, name_b, key_a, key_b; /* spans; a == b also when the field is absent */
} attribute_spans;

/* Canonical SerializedTensor, as _decode_attribute's in-order path takes it without falling back:
 * [0a name] [12 full_name] [1a checkpoint_key], each optional, in this order, consuming exactly [a, b). */
static int
check_attribute(const unsigned char *buf, size_t a, size_t b, attribute_spans *out)
{
    static const unsigned char tags[3] = {0x0A, 0x12, 0x1A};
    size_t starts[3] = {a, a, a}, stops[3] = {a, a, a};
    size_t pos = a;
    for (int i = 0; i < 3; i++) {
        if (pos < b && buf[pos] == tags[i]) {
            uint64_t len;
            size_t p = pos + 1;
            if (!read_varint(buf, &p, b, &len) || len > b - p)
                return 0;
            starts[i] = p;
            stops[i] = p + (size_t)len;
            pos = stops[i];
        }
    }
    if (pos != b)
        return 0;
    out->name_a = starts[0];
    out->name_b = stops[0];
    out->key_a = starts[2];
    out->key_b = stops[2];
    return 1;
}

static PyObject *
decode_text(const unsigned char *buf, size_t a, size_t b)
{
    return PyUnicode_DecodeUTF8((const char *)buf + a, (Py_ssize_t)(b - a), "surrogateescape");
}

static PyObject *
build_child(const unsigned char *buf, size_t a, size_t b)
{
    uint64_t node_id = 0;
    size_t name_start = 0;
    check_child(buf, a, b, &node_id, &name_start); /* known good */
    PyObject *id = PyLong_FromUnsignedLongLong(node_id);
    PyObject *name = id != NULL ? decode_text(buf, name_start, b) : NULL;
    PyObject *pair = name != NULL ? PyTuple_New(2) : NULL;
    if (pair == NULL) {
        Py_XDECREF(id);
        Py_XDECREF(name);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, id);
    PyTuple_SET_ITEM(pair, 1, name);
    return pair;
}

static PyObject *
build_attribute(const unsigned char *buf, size_t a, size_t b, PyObject *keys, PyObject *value_name)
{
    static const char VALUE_NAME[] = "VARIABLE_VALUE";
    attribute_spans s;
    check_attribute(buf, a, b, &s); /* known good */
    PyObject *name;
    size_t n = sizeof(VALUE_NAME) - 1;
    if (s.name_b - s.name_a == n && memcmp(buf + s.name_a, VALUE_NAME, n) == 0) { /* value_name itself */
        Py_INCREF(value_name);
        name = value_name;
    } else {
        name = decode_text(buf, s.name_a, s.name_b);
        if (name == NULL)
            return NULL;
    }
    PyObject *key = decode_text(buf, s.key_a, s.key_b);
    if (key == NULL) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *known = PyDict_GetItemWithError(keys, key); /* keys.get(key, key) */
    if (known != NULL) {
        Py_INCREF(known);
        Py_SETREF(key, known);
    } else if (PyErr_Occurred()) {
        Py_DECREF(name);
        Py_DECREF(key);
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(name);
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, key);
    return pair;
}

/* Reads the field at *pos of a node ending at b: its tag and payload span. 0 unless the tag is one of
 * 0a 12 2a with a valid length varint and the payload inside the node. */
static int
node_field(const unsigned char *buf, size_t *pos, size_t b, unsigned char *tag, size_t *start, size_t *stop)
{
    unsigned char t = buf[*pos];
    if (t != 0x0A && t != 0x12 && t != 0x2A)
        return 0;
    size_t p = *pos + 1;
    uint64_t len;
    if (!read_varint(buf, &p, b, &len) || len > b - p)
        return 0;
    *tag = t;
    *start = p;
    *stop = p + (size_t)len;
    *pos = *stop;
    return 1;
}

/* One TrackableObject at buf[a:b]: a node_type instance when canonical, else the (a, b) span (plain tuple)
 * for the Python code. New reference; NULL on allocation failure only. */
static PyObject *
decode_node(const unsigned char *buf, size_t a, size_t b, PyObject *keys, PyTypeObject *node_type,
            PyObject *value_name)
{
    size_t pos = a, start = 0, stop = 0, n_children = 0, n_attributes = 0;
    unsigned char tag = 0;
    uint64_t id = 0;
    size_t name_start = 0;
    attribute_spans spans = {0, 0, 0, 0};
    while (pos < b) { /* pass 1: canonical? */
        if (!node_field(buf, &pos, b, &tag, &start, &stop))
            return Py_BuildValue("(nn)", (Py_ssize_t)a, (Py_ssize_t)b);
        if (tag == 0x0A) {
            if (!check_child(buf, start, stop, &id, &name_start))
                return Py_BuildValue("(nn)", (Py_ssize_t)a, (Py_ssize_t)b);
            n_children++;
        } else if (tag == 0x12) {
            if (!check_attribute(buf, start, stop, &spans))
                return Py_BuildValue("(nn)", (Py_ssize_t)a, (Py_ssize_t)b);
            n_attributes++;
        }
    }
    PyObject *items[3];
    items[0] = PyTuple_New((Py_ssize_t)n_children);
    items[1] = PyTuple_New((Py_ssize_t)n_attributes);
    items[2] = PyTuple_New(0);
    if (items[0] != NULL && items[1] != NULL) {
        size_t ic = 0, ia = 0;
        pos = a;
        while (pos < b) { /* pass 2: known good */
            node_field(buf, &pos, b, &tag, &start, &stop);
            PyObject *item;
            if (tag == 0x0A) {
                item = build_child(buf, start, stop);
                if (item == NULL)
                    goto fail;
                PyTuple_SET_ITEM(items[0], (Py_ssize_t)ic++, item);
            } else if (tag == 0x12) {
                item = build_attribute(buf, start, stop, keys, value_name);
                if (item == NULL)
                    goto fail;
                PyTuple_SET_ITEM(items[1], (Py_ssize_t)ia++, item);
            }
        }
    }
    return make_typed_tuple(node_type, items, 3);
fail:
    /* Unfilled slots of a tuple are NULL: tuple_dealloc skips them. */
    for (int i = 0; i < 3; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

PyDoc_STRVAR(object_graph_doc,
             "object_graph(buf, keys, node_type, value_name) -> list | None\n\n"
             "None unless buf is a sequence of 0a LEN fields (nodes) exactly covering it; else one item per\n"
             "node: a node_type instance for a canonical node, the (start, end) span of its payload otherwise.");

static PyObject *
wire_object_graph(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "object_graph() takes 4 arguments");
        return NULL;
    }
    PyObject *bufobj = args[0], *keys = args[1], *node_type = args[2], *value_name = args[3];
    if (!PyBytes_CheckExact(bufobj) || !PyDict_CheckExact(keys) || !is_tuple_type(node_type))
        Py_RETURN_NONE;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(bufobj);
    size_t end = (size_t)PyBytes_GET_SIZE(bufobj), pos = 0, count = 0;
    while (pos < end) { /* pass 1: the top level */
        uint64_t len;
        if (buf[pos] != 0x0A)
            Py_RETURN_NONE;
        pos++;
        if (!read_varint(buf, &pos, end, &len) || len > end - pos)
            Py_RETURN_NONE;
        pos += (size_t)len;
        count++;
    }
    PyObject *nodes = PyList_New((Py_ssize_t)count);
    if (nodes == NULL)
        return NULL;
    pos = 0;
    for (size_t i = 0; i < count; i++) { /* pass 2: the nodes */
        uint64_t len = 0;
        pos++;
        read_varint(buf, &pos, end, &len);
        PyObject *node = decode_node(buf, pos, pos + (size_t)len, keys, (PyTypeObject *)node_type, value_name);
        if (node == NULL) {
            Py_DECREF(nodes);
            return NULL;
        }
        PyList_SET_ITEM(nodes, (Py_ssize_t)i, node);
        pos += (size_t)len;
    }
    return nodes;
}

/* ------------------------------------------------------------------------------------------- module */

static PyMethodDef wire_methods[] = {
    {"bundle_entry", (PyCFunction)(void (*)(void))wire_bundle_entry, METH_FASTCALL, bundle_entry_doc},
    {"block_entries", (PyCFunction)(void (*)(void))wire_block_entries, METH_FASTCALL, block_entries_doc},
    {"object_graph", (PyCFunction)(void (*)(void))wire_object_graph, METH_FASTCALL, object_graph_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT,
    "ckptdoctor.readers._wire",
    "C versions of the canonical cases of protowire's and sstable's hot decoders (see _wire.c).",
    0,
    wire_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModuleDef_Init(&wire_module);
}
