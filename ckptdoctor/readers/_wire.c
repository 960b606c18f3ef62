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
 *
 * and two walks of a decoded object graph, which answer only when every part they read is of the form the
 * decoders give it (exact tuples, ints and strs) and return None otherwise, having changed nothing:
 *
 *   object_walk(nodes, node_type, starts, path_of)                 ~ formats.tf2.objects._walk_py
 *   object_paths(nodes, node_type, value_name, slot_segment)       ~ readers.bundle._attribute_paths
 *
 * and a check of the entries' byte ranges (None for an entry of another form):
 *
 *   may_overlap(entries, entry_type)                                ~ readers.bundle._may_overlap
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

/* 1 when the function `name` was given `want` arguments; else 0, with a TypeError set. */
static int
takes(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments", name, want);
    return 0;
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
    if (!takes("bundle_entry", nargs, 4))
        return NULL;
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
    if (!takes("block_entries", nargs, 2))
        return NULL;
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
    if (!takes("object_graph", nargs, 4))
        return NULL;
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

/* ------------------------------------------------------------------------------------- object paths */

/*
 * Two walks of a decoded object graph (a list of ObjectNode): formats.tf2.objects._walk_py and the attribute
 * paths of readers.bundle._object_path_lookup_py. They answer only when every part they read has the type the
 * decoders give it: each node read exactly of node_type with 3 items, its children, attributes and slot
 * variables exact tuples of exact tuples, ids exact ints, names and paths exact strs. On anything else they
 * return None having changed nothing, and the Python code runs (and raises what it raises).
 *
 * Nothing in them runs Python code: exact str, int and tuple have no user-defined comparison or hash, and the
 * only object that the garbage collector tracks (object_paths' dict) is made before `nodes` is first read, so
 * borrowed references into `nodes` stay valid throughout.
 */

/* 1 for an exact str (made ready: 3.10 and 3.11 may hold legacy strings); 0 for anything else, and 0 with an
 * exception set when making it ready fails. */
static inline int
is_text(PyObject *o)
{
    if (!PyUnicode_CheckExact(o))
        return 0;
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(o) < 0)
        return 0;
#endif
    return 1;
}

/* A node id as `0 <= i < n` takes it: 1 and *out for an exact int in range, 0 for one out of range (huge and
 * negative ones too), -1 for anything that is not an exact int. */
static inline int
node_index(PyObject *o, Py_ssize_t n, Py_ssize_t *out)
{
    if (!PyLong_CheckExact(o))
        return -1;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow); /* no error for an exact int */
    if (overflow != 0 || v < 0 || v >= (long long)n)
        return 0;
    *out = (Py_ssize_t)v;
    return 1;
}

/* An edge (id, name) at item id_at and name_at of an exact tuple of `size` items: node_index's answer for the id
 * and the name (borrowed) in *name; -1 when the tuple or the name is of another form. */
static inline int
edge_of(PyObject *t, Py_ssize_t size, Py_ssize_t id_at, Py_ssize_t name_at, Py_ssize_t n, Py_ssize_t *id,
        PyObject **name)
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != size)
        return -1;
    PyObject *s = PyTuple_GET_ITEM(t, name_at);
    if (!is_text(s))
        return -1;
    *name = s;
    return node_index(PyTuple_GET_ITEM(t, id_at), n, id);
}

/* Item `part` (0 children, 1 attributes, 2 slot variables) of node k when the node is exactly of node_type with
 * 3 items and that item is an exact tuple; NULL otherwise. Borrowed. */
static inline PyObject *
node_part(PyObject *const *nodes, Py_ssize_t k, PyTypeObject *node_type, Py_ssize_t part)
{
    PyObject *node = nodes[k];
    if (Py_TYPE(node) != node_type || PyTuple_GET_SIZE(node) != 3)
        return NULL;
    PyObject *item = PyTuple_GET_ITEM(node, part);
    return PyTuple_CheckExact(item) ? item : NULL;
}

/* The exact strs parts[0..count) joined by "/", the empty ones left out when skip_empty (as
 * "/".join(p for p in parts if p)), else all kept (as f"{a}/{b}"). New reference; NULL on allocation failure. */
static PyObject *
join_path(PyObject *const *parts, int count, int skip_empty)
{
    Py_ssize_t total = 0;
    Py_UCS4 maxchar = '/';
    int used = 0;
    for (int i = 0; i < count; i++) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(parts[i]);
        if (skip_empty && len == 0)
            continue;
        if (len > PY_SSIZE_T_MAX - 1 - total)
            return PyErr_NoMemory();
        total += len + (used ? 1 : 0);
        used++;
        Py_UCS4 m = PyUnicode_MAX_CHAR_VALUE(parts[i]);
        if (m > maxchar)
            maxchar = m;
    }
    PyObject *out = PyUnicode_New(total, maxchar);
    if (out == NULL)
        return NULL;
    int kind = PyUnicode_KIND(out);
    void *data = PyUnicode_DATA(out);
    Py_ssize_t pos = 0;
    used = 0;
    for (int i = 0; i < count; i++) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(parts[i]);
        if (skip_empty && len == 0)
            continue;
        if (used++)
            PyUnicode_WRITE(kind, data, pos++, '/');
        if (len != 0 && PyUnicode_CopyCharacters(out, pos, parts[i], 0, len) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        pos += len;
    }
    return out;
}

/* The new references of paths[0..n), and the arrays. */
static void
free_paths(PyObject **paths, Py_ssize_t n, Py_ssize_t *queue)
{
    if (paths != NULL) {
        for (Py_ssize_t k = 0; k < n; k++)
            Py_XDECREF(paths[k]);
    }
    PyMem_Free(paths);
    PyMem_Free(queue);
}

/* The result of a walk that stopped: NULL if an exception is set (allocation failure), else None. */
static PyObject *
deferred(void)
{
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* objects._walk_py's breadth-first walk from the starts already queued (queue[0..tail), route set): each node's
 * children, then its slot variables' (slot, slot_name), first route wins. 0 when a part is of another form or
 * on allocation failure. */
static int
walk_from(PyObject *const *nodes, Py_ssize_t n, PyTypeObject *node_type, char *seen, PyObject **route,
          Py_ssize_t *queue, Py_ssize_t tail)
{
    for (Py_ssize_t head = 0; head < tail; head++) {
        Py_ssize_t u = queue[head];
        PyObject *children = node_part(nodes, u, node_type, 0), *slots = node_part(nodes, u, node_type, 2);
        if (children == NULL || slots == NULL)
            return 0;
        Py_ssize_t nc = PyTuple_GET_SIZE(children), ns = PyTuple_GET_SIZE(slots);
        for (Py_ssize_t j = 0; j < nc + ns; j++) {
            Py_ssize_t v = 0;
            PyObject *name = NULL;
            int r = j < nc ? edge_of(PyTuple_GET_ITEM(children, j), 2, 0, 1, n, &v, &name)
                           : edge_of(PyTuple_GET_ITEM(slots, j - nc), 3, 2, 1, n, &v, &name);
            if (r < 0)
                return 0;
            if (r == 0 || seen[v])
                continue;
            PyObject *parts[2] = {route[u], name};
            PyObject *below = join_path(parts, 2, 0);
            if (below == NULL)
                return 0;
            seen[v] = 1;
            route[v] = below;
            queue[tail++] = v; /* each node is queued once: tail < n */
        }
    }
    return 1;
}

PyDoc_STRVAR(object_walk_doc,
             "object_walk(nodes, node_type, starts, path_of) -> bytearray | None\n\n"
             "formats.tf2.objects._walk_py(nodes, starts, path_of) for a list of node_type nodes, a list of\n"
             "(node, path) starts and a list path_of as long as nodes: the nodes reached, path_of completed.\n"
             "None, path_of unchanged, when a part it reads is of another form or a start is out of range.");

static PyObject *
wire_object_walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!takes("object_walk", nargs, 4))
        return NULL;
    PyObject *nodes = args[0], *node_type = args[1], *starts = args[2], *path_of = args[3];
    if (!PyList_CheckExact(nodes) || !is_tuple_type(node_type) || !PyList_CheckExact(starts)
        || !PyList_CheckExact(path_of) || PyList_GET_SIZE(path_of) != PyList_GET_SIZE(nodes))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(nodes), tail = 0;
    PyObject *seen_obj = PyByteArray_FromStringAndSize(NULL, n); /* not tracked by the collector */
    PyObject **route = PyMem_Calloc((size_t)n + 1, sizeof(PyObject *));
    Py_ssize_t *queue = PyMem_Malloc(((size_t)n + 1) * sizeof(Py_ssize_t));
    if (seen_obj == NULL || route == NULL || queue == NULL) {
        if (seen_obj != NULL)
            PyErr_NoMemory();
        goto stop;
    }
    char *seen = PyByteArray_AS_STRING(seen_obj);
    memset(seen, 0, (size_t)n);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(starts); i++) {
        PyObject *start = PyList_GET_ITEM(starts, i), *path;
        Py_ssize_t node = 0;
        /* A start out of range: Python indexes from the end or raises; it decides. */
        if (edge_of(start, 2, 0, 1, n, &node, &path) != 1)
            goto stop;
        if (!seen[node]) {
            seen[node] = 1;
            Py_INCREF(path);
            route[node] = path;
            queue[tail++] = node;
        }
    }
    if (!walk_from(PySequence_Fast_ITEMS(nodes), n, (PyTypeObject *)node_type, seen, route, queue, tail))
        goto stop;
    /* path_of[k] is set where it is None, by the first route to k (the first start naming k, or the edge that
     * reached it): the route kept for k. Nothing else reads path_of, so setting it at the end is the same. */
    for (Py_ssize_t k = 0; k < n; k++) {
        if (route[k] != NULL && PyList_GET_ITEM(path_of, k) == Py_None) {
            PyList_SET_ITEM(path_of, k, route[k]);
            route[k] = NULL;
            Py_DECREF(Py_None);
        }
    }
    free_paths(route, n, queue);
    return seen_obj;
stop:
    free_paths(route, n, queue);
    Py_XDECREF(seen_obj);
    return deferred();
}

/* Rule 1 of object_paths_from_graph: each node's path from the root over children edges, breadth first, first
 * route wins (paths[0] = "" set, queued). 0 when a part is of another form or on allocation failure. */
static int
root_paths(PyObject *const *nodes, Py_ssize_t n, PyTypeObject *node_type, PyObject **paths, Py_ssize_t *queue)
{
    Py_ssize_t tail = 1;
    queue[0] = 0;
    for (Py_ssize_t head = 0; head < tail; head++) {
        Py_ssize_t u = queue[head];
        PyObject *here = paths[u], *children = node_part(nodes, u, node_type, 0);
        if (children == NULL)
            return 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(children); j++) {
            Py_ssize_t v = 0;
            PyObject *name = NULL;
            int r = edge_of(PyTuple_GET_ITEM(children, j), 2, 0, 1, n, &v, &name);
            if (r < 0)
                return 0;
            if (r == 0 || paths[v] != NULL)
                continue;
            if (PyUnicode_GET_LENGTH(here) != 0) {
                PyObject *parts[2] = {here, name};
                paths[v] = join_path(parts, 2, 0);
                if (paths[v] == NULL)
                    return 0;
            } else {
                Py_INCREF(name);
                paths[v] = name;
            }
            queue[tail++] = v;
        }
    }
    return 1;
}

/* Rule 2: <variable path>/<segment>/<optimizer path>/<slot name>, empty parts left out, for each slot variable
 * without a path whose variable has one, owners in node order. 0 as root_paths. */
static int
slot_paths(PyObject *const *nodes, Py_ssize_t n, PyTypeObject *node_type, PyObject **paths, PyObject *segment)
{
    for (Py_ssize_t owner = 0; owner < n; owner++) {
        PyObject *owner_path = paths[owner]; /* set once: never replaced below */
        if (owner_path == NULL)
            continue;
        PyObject *slots = node_part(nodes, owner, node_type, 2);
        if (slots == NULL)
            return 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(slots); j++) {
            PyObject *slot = PyTuple_GET_ITEM(slots, j), *name = NULL;
            Py_ssize_t var = 0, target = 0;
            int r = edge_of(slot, 3, 2, 1, n, &target, &name);
            if (r < 0)
                return 0;
            int rv = node_index(PyTuple_GET_ITEM(slot, 0), n, &var);
            if (rv < 0)
                return 0;
            if (r == 0 || rv == 0 || paths[var] == NULL || paths[target] != NULL)
                continue;
            PyObject *parts[4] = {paths[var], segment, owner_path, name};
            paths[target] = join_path(parts, 4, 1);
            if (paths[target] == NULL)
                return 0;
        }
    }
    return 1;
}

/* Rule 3 into by_key: for each node with a path, in order, each attribute's key -> the path (VARIABLE_VALUE of
 * a node other than the root) or <path>/<attribute name> (the name alone at the root). 0 as root_paths. */
static int
key_paths(PyObject *const *nodes, Py_ssize_t n, PyTypeObject *node_type, PyObject **paths, PyObject *value_name,
          PyObject *by_key)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *path = paths[k];
        if (path == NULL)
            continue;
        PyObject *attributes = node_part(nodes, k, node_type, 1);
        if (attributes == NULL)
            return 0;
        int rooted = PyUnicode_GET_LENGTH(path) == 0;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(attributes); j++) {
            PyObject *pair = PyTuple_GET_ITEM(attributes, j);
            if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
                return 0;
            PyObject *name = PyTuple_GET_ITEM(pair, 0), *key = PyTuple_GET_ITEM(pair, 1), *value;
            if (!is_text(name) || !is_text(key))
                return 0;
            if (rooted) {
                Py_INCREF(name);
                value = name;
            } else {
                int is_value = PyObject_RichCompareBool(name, value_name, Py_EQ); /* two exact strs: no error */
                if (is_value < 0)
                    return 0;
                if (is_value) {
                    Py_INCREF(path);
                    value = path;
                } else {
                    PyObject *parts[2] = {path, name};
                    value = join_path(parts, 2, 0);
                    if (value == NULL)
                        return 0;
                }
            }
            int r = PyDict_SetItem(by_key, key, value);
            Py_DECREF(value);
            if (r < 0)
                return 0;
        }
    }
    return 1;
}

PyDoc_STRVAR(object_paths_doc,
             "object_paths(nodes, node_type, value_name, slot_segment) -> dict | None\n\n"
             "readers.bundle._attribute_paths(nodes): each saved attribute's key -> its object path (rules 1\n"
             "to 3 of object_paths_from_graph), for a list or tuple of node_type nodes; None when a part it\n"
             "reads is of another form.");

static PyObject *
wire_object_paths(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!takes("object_paths", nargs, 4))
        return NULL;
    PyObject *nodes = args[0], *node_type = args[1], *value_name = args[2], *segment = args[3];
    if (!(PyList_CheckExact(nodes) || PyTuple_CheckExact(nodes)) || !is_tuple_type(node_type)
        || !is_text(value_name) || !is_text(segment))
        return deferred();
    PyObject *by_key = PyDict_New(); /* first: the one allocation the collector tracks */
    if (by_key == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(nodes);
    if (n == 0)
        return by_key;
    PyObject *const *items = PySequence_Fast_ITEMS(nodes);
    PyTypeObject *type = (PyTypeObject *)node_type;
    PyObject **paths = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    Py_ssize_t *queue = PyMem_Malloc((size_t)n * sizeof(Py_ssize_t));
    if (paths == NULL || queue == NULL) {
        PyErr_NoMemory();
        goto stop;
    }
    paths[0] = PyUnicode_New(0, 0);
    if (paths[0] == NULL || !root_paths(items, n, type, paths, queue) || !slot_paths(items, n, type, paths, segment)
        || !key_paths(items, n, type, paths, value_name, by_key))
        goto stop;
    free_paths(paths, n, queue);
    return by_key;
stop:
    free_paths(paths, n, queue);
    Py_DECREF(by_key);
    return deferred();
}

/* -------------------------------------------------------------------------------------- byte ranges */

/* One non-empty entry's bytes: [start, end) of data file `shard`. */
typedef struct {
    uint64_t shard, start, end;
} span;

static int
span_order(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return 0;
}

/* 1 and *out for an exact int in [0, 2**63) (what decode_bundle_entry gives); 0 for anything else. */
static inline int
below_2_63(PyObject *o, uint64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow); /* no error for an exact int */
    if (overflow != 0 || v < 0)
        return 0;
    *out = (uint64_t)v;
    return 1;
}

PyDoc_STRVAR(may_overlap_doc,
             "may_overlap(entries, entry_type) -> bool | None\n\n"
             "readers.bundle._may_overlap(entries) for a list of entry_type entries whose shard_id, offset and\n"
             "size (items 2, 3, 4) are exact ints below 2**63: whether the bytes of two non-empty ones overlap in\n"
             "one data file. None when an entry is of another form.");

static PyObject *
wire_may_overlap(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (!takes("may_overlap", nargs, 2))
        return NULL;
    PyObject *entries = args[0], *entry_type = args[1];
    if (!PyList_CheckExact(entries) || !is_tuple_type(entry_type))
        Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(entries), kept = 0;
    span *spans = PyMem_Malloc(((size_t)n + 1) * sizeof(span));
    if (spans == NULL)
        return PyErr_NoMemory();
    int in_order = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        uint64_t shard = 0, start = 0, size = 0;
        if (Py_TYPE(e) != (PyTypeObject *)entry_type || PyTuple_GET_SIZE(e) < 5
            || !below_2_63(PyTuple_GET_ITEM(e, 2), &shard) || !below_2_63(PyTuple_GET_ITEM(e, 3), &start)
            || !below_2_63(PyTuple_GET_ITEM(e, 4), &size)) {
            PyMem_Free(spans);
            Py_RETURN_NONE;
        }
        if (size == 0)
            continue;
        span s = {shard, start, start + size}; /* both below 2**63: no overflow */
        if (kept > 0 && span_order(&spans[kept - 1], &s) > 0)
            in_order = 0;
        spans[kept++] = s;
    }
    if (!in_order)
        qsort(spans, (size_t)kept, sizeof(span), span_order);
    /* In (shard, start) order, two ranges overlap only if one starts before its predecessor in its file ends. */
    int found = 0;
    for (Py_ssize_t k = 1; k < kept && !found; k++)
        found = spans[k].shard == spans[k - 1].shard && spans[k].start < spans[k - 1].end;
    PyMem_Free(spans);
    return PyBool_FromLong(found);
}

/* ------------------------------------------------------------------------------------------- module */

static PyMethodDef wire_methods[] = {
    {"bundle_entry", (PyCFunction)(void (*)(void))wire_bundle_entry, METH_FASTCALL, bundle_entry_doc},
    {"block_entries", (PyCFunction)(void (*)(void))wire_block_entries, METH_FASTCALL, block_entries_doc},
    {"object_graph", (PyCFunction)(void (*)(void))wire_object_graph, METH_FASTCALL, object_graph_doc},
    {"object_walk", (PyCFunction)(void (*)(void))wire_object_walk, METH_FASTCALL, object_walk_doc},
    {"object_paths", (PyCFunction)(void (*)(void))wire_object_paths, METH_FASTCALL, object_paths_doc},
    {"may_overlap", (PyCFunction)(void (*)(void))wire_may_overlap, METH_FASTCALL, may_overlap_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wire_module = {
    PyModuleDef_HEAD_INIT,
    "ckptdoctor.readers._wire",
    "C versions of the canonical cases of protowire's and sstable's hot decoders, and of two object-graph walks\n"
    "(see _wire.c).",
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
