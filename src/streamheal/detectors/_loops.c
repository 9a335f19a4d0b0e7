/* The drift detectors' innermost loops, the feature matrix of a batch (block.py) and the
 * decoder's all-floats check (events.py), compiled (optional; see setup.py).
 *
 * Each function does, operation for operation and in the same order, what the numpy
 * expressions it replaces do (sequential cumulative sums, NaN-propagating minimum and
 * maximum, numpy's NaN-last ordering in searches), so both paths give bit-identical
 * results; the Python modules use these when this module was built and fall back to
 * numpy otherwise. What they replace is where numpy is slow for the suite's shapes:
 * ``accumulate`` along an axis (about 5 ns per element, and a dozen temporaries per
 * chunk) in cusum.py, and one ``searchsorted`` call per feature in stats.py.
 *
 * Arrays come in through the buffer protocol (no numpy headers needed to build):
 * C-contiguous float64 ("d") or int64 ("q"/"l") buffers of the sizes the caller states.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* numpy's minimum / maximum: a NaN in either operand wins. Two selects, not a
 * short-circuit ||: no branch in the loops that use them, which the compiler then
 * vectorizes (walk_summarize ran 2.3 times slower with the ||). */
static inline double nan_min(double a, double b)
{
    double lower = a <= b ? a : b; /* b when either is NaN */
    return a != a ? a : lower;
}
static inline double nan_max(double a, double b)
{
    double higher = a >= b ? a : b;
    return a != a ? a : higher;
}

static int
take(PyObject *obj, Py_buffer *view, Py_ssize_t items, int writable, int integer, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *format = view->format ? view->format : "B";
    int ok = view->itemsize == 8 && view->len == items * 8 &&
             (integer ? (strcmp(format, "q") == 0 || strcmp(format, "l") == 0 ||
                         strcmp(format, "<q") == 0 || strcmp(format, "<l") == 0 ||
                         strcmp(format, "=q") == 0 || strcmp(format, "=l") == 0)
                      : (strcmp(format, "d") == 0 || strcmp(format, "<d") == 0 ||
                         strcmp(format, "=d") == 0));
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd contiguous %s items", name, items,
                     integer ? "int64" : "float64");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* increments(scores, total, count, k, cumulative, total_out, n, m)
 *
 *   sums = cumsum(scores, axis=0) + total
 *   steps = scores - sums / (count + ramp)          ramp = 1, 2, ..., n
 *   moved = cumsum(steps, axis=0)
 *   cumulative[:, :m] = moved - k * ramp;  cumulative[:, m:] = -moved - k * ramp
 *   total_out = sums[-1]
 *
 * Returns False, with the outputs incomplete, at the first NaN score: a chunk with
 * missing values takes cusum.py's masked path instead.
 */
static PyObject *
increments(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_scores, *o_total, *o_count, *o_cumulative, *o_total_out;
    double k;
    Py_ssize_t n, m;
    if (!PyArg_ParseTuple(args, "OOOdOOnn", &o_scores, &o_total, &o_count, &k, &o_cumulative,
                          &o_total_out, &n, &m))
        return NULL;
    Py_buffer scores, total, count, cumulative, total_out;
    if (take(o_scores, &scores, n * m, 0, 0, "scores") < 0)
        return NULL;
    if (take(o_total, &total, m, 0, 0, "total") < 0)
        goto fail_scores;
    if (take(o_count, &count, m, 0, 0, "count") < 0)
        goto fail_total;
    if (take(o_cumulative, &cumulative, n * 2 * m, 1, 0, "cumulative") < 0)
        goto fail_count;
    if (take(o_total_out, &total_out, m, 1, 0, "total_out") < 0)
        goto fail_cumulative;

    const double *z = scores.buf, *t = total.buf, *c = count.buf;
    double *out = cumulative.buf, *t_out = total_out.buf;
    double *run = PyMem_Malloc(2 * m * sizeof(double)); /* running sum, running moved */
    if (run == NULL) {
        PyErr_NoMemory();
        goto fail_all;
    }
    double *raw = run, *moved = run + m;
    int complete = 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        double ramp = (double)(i + 1);
        double shrink = k * ramp;
        const double *zi = z + i * m;
        double *row = out + i * 2 * m;
        for (Py_ssize_t j = 0; j < m; j++) {
            if (isnan(zi[j])) {
                complete = 0;
                goto done;
            }
            raw[j] = i ? raw[j] + zi[j] : zi[j];
            double sum = raw[j] + t[j];
            double step = zi[j] - sum / (c[j] + ramp);
            moved[j] = i ? moved[j] + step : step;
            row[j] = moved[j] - shrink;
            row[m + j] = -moved[j] - shrink;
            if (i == n - 1)
                t_out[j] = sum;
        }
    }
done:
    PyMem_Free(run);
    PyBuffer_Release(&total_out);
    PyBuffer_Release(&cumulative);
    PyBuffer_Release(&count);
    PyBuffer_Release(&total);
    PyBuffer_Release(&scores);
    return PyBool_FromLong(complete);

fail_all:
    PyBuffer_Release(&total_out);
fail_cumulative:
    PyBuffer_Release(&cumulative);
fail_count:
    PyBuffer_Release(&count);
fail_total:
    PyBuffer_Release(&total);
fail_scores:
    PyBuffer_Release(&scores);
    return NULL;
}

/* walk_summarize(cumulative, base_row, state, floor, start, count, indices, zeros,
 *                new_zeros, peaks, end, rows, width)
 *
 * The CUSUM path of rows start .. start + count - 1, walked from base_row with state,
 * and its summary, in one pass (cusum.py's numpy path, VectorCusum._walk_from then
 * advance, computes the same):
 *
 *   since = cumulative[i] - cumulative[base_row - 1] if base_row else cumulative[i]
 *   w = since + state;  floor = running minimum of w from base_row
 *   path[i] = w - minimum(floor, 0.0)
 *   touched = where(path <= 0, indices, -1).max(axis=0)   over the rows
 *   new_zeros = where(touched >= 0, touched + 1, zeros)
 *   peaks = path.max(axis=0);  end = path[start + count - 1]
 *
 * Only the rows asked for are walked, so a batch is walked as far as it is consumed (a
 * cap or a re-arm mid-batch starts a new walk there). floor carries the running minimum
 * across calls: read as it stood after row start - 1 (unless start == base_row, where it
 * starts afresh), left as it stands after the last row.
 */
static PyObject *
walk_summarize(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_cumulative, *o_state, *o_floor, *o_indices, *o_zeros, *o_touched, *o_peaks,
        *o_end;
    Py_ssize_t base_row, start, count, rows, width;
    if (!PyArg_ParseTuple(args, "OnOOnnOOOOOnn", &o_cumulative, &base_row, &o_state, &o_floor,
                          &start, &count, &o_indices, &o_zeros, &o_touched, &o_peaks, &o_end,
                          &rows, &width))
        return NULL;
    if (base_row < 0 || start < base_row || count < 1 || start + count > rows) {
        PyErr_SetString(PyExc_ValueError, "walk_summarize: rows out of range");
        return NULL;
    }
    Py_buffer bufs[8];
    PyObject *objects[8] = {o_cumulative, o_state, o_floor, o_indices, o_zeros, o_touched, o_peaks, o_end};
    const Py_ssize_t items[8] = {rows * width, width, width, count, width, width, width, width};
    const int writable[8] = {0, 0, 1, 0, 0, 1, 1, 1};
    const int integer[8] = {0, 0, 0, 1, 1, 1, 0, 0};
    const char *names[8] = {"cumulative", "state", "floor", "indices", "zeros", "new_zeros", "peaks", "end"};
    int taken = 0;
    for (; taken < 8; taken++)
        if (take(objects[taken], &bufs[taken], items[taken], writable[taken], integer[taken],
                 names[taken]) < 0)
            break;
    if (taken < 8) {
        while (taken--)
            PyBuffer_Release(&bufs[taken]);
        return NULL;
    }
    const double *restrict cum = bufs[0].buf, *restrict s = bufs[1].buf;
    double *restrict floor = bufs[2].buf, *restrict peak = bufs[6].buf, *restrict end = bufs[7].buf;
    const int64_t *restrict idx = bufs[3].buf, *restrict before = bufs[4].buf;
    int64_t *restrict last = bufs[5].buf;
    /* Rows after base_row are walked from base_row - 1's increments; x - 0.0 is x, bit
     * for bit (signed zeros included), so base_row 0 subtracts zeros: one loop, no
     * branch on it, and the inner loop vectorizes. */
    double *zeros = NULL;
    const double *restrict base = cum + (base_row - 1) * width;
    if (!base_row) {
        zeros = PyMem_Calloc(width, sizeof(double));
        if (zeros == NULL) {
            for (int b = 7; b >= 0; b--)
                PyBuffer_Release(&bufs[b]);
            return PyErr_NoMemory();
        }
        base = zeros;
    }
    for (Py_ssize_t i = start; i < start + count; i++) {
        const double *restrict ci = cum + i * width;
        const int64_t index = idx[i - start];
        const int fresh = i == base_row, first = i == start;
        for (Py_ssize_t j = 0; j < width; j++) {
            double w = (ci[j] - base[j]) + s[j];
            double f = fresh ? w : nan_min(floor[j], w);
            floor[j] = f;
            double v = w - nan_min(f, 0.0);
            int64_t at = v <= 0.0 ? index : -1;
            last[j] = first ? at : (at > last[j] ? at : last[j]);
            peak[j] = first ? v : nan_max(peak[j], v);
            end[j] = v; /* the last row's stays */
        }
    }
    PyMem_Free(zeros);
    for (Py_ssize_t j = 0; j < width; j++)
        last[j] = last[j] >= 0 ? last[j] + 1 : before[j];
    for (int b = 7; b >= 0; b--)
        PyBuffer_Release(&bufs[b]);
    Py_RETURN_NONE;
}

/* numpy's ordering of doubles: NaN after everything (npysort's DOUBLE_LT). */
static inline int lt(double a, double b) { return a < b || (b != b && a == a); }

/* searchsorted_rows(haystack, needles, right, out, rows, length, count)
 *
 *   out[r] = searchsorted(haystack[r], needles[r], side="right" if right else "left")
 *
 * for every row r: a search of each row's own sorted values (NaN last) in one call.
 */
static PyObject *
searchsorted_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_haystack, *o_needles, *o_out;
    int right;
    Py_ssize_t rows, length, count;
    if (!PyArg_ParseTuple(args, "OOpOnnn", &o_haystack, &o_needles, &right, &o_out, &rows,
                          &length, &count))
        return NULL;
    Py_buffer haystack, needles, out;
    if (take(o_haystack, &haystack, rows * length, 0, 0, "haystack") < 0)
        return NULL;
    if (take(o_needles, &needles, rows * count, 0, 0, "needles") < 0) {
        PyBuffer_Release(&haystack);
        return NULL;
    }
    if (take(o_out, &out, rows * count, 1, 1, "out") < 0) {
        PyBuffer_Release(&needles);
        PyBuffer_Release(&haystack);
        return NULL;
    }
    for (Py_ssize_t r = 0; r < rows; r++) {
        const double *a = (const double *)haystack.buf + r * length;
        const double *v = (const double *)needles.buf + r * count;
        int64_t *o = (int64_t *)out.buf + r * count;
        for (Py_ssize_t q = 0; q < count; q++) {
            double key = v[q];
            Py_ssize_t low;
            if (q > 0 && !lt(key, v[q - 1])) {
                /* Keys in order (the callers' case): walk on from the last answer, a
                 * merge of the two sorted rows, O(length + count) per row. */
                low = o[q - 1];
                while (low < length && (right ? !lt(key, a[low]) : lt(a[low], key)))
                    low++;
            } else {
                Py_ssize_t high = length;
                low = 0;
                while (low < high) { /* the first position whose value goes after key */
                    Py_ssize_t mid = low + (high - low) / 2;
                    if (right ? !lt(key, a[mid]) : lt(a[mid], key))
                        low = mid + 1;
                    else
                        high = mid;
                }
            }
            o[q] = low;
        }
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&needles);
    PyBuffer_Release(&haystack);
    Py_RETURN_NONE;
}

/* ks_statistics(columns, at, before, picked, window, out, count, total, n1, n2)
 *
 * For each of the ``count`` picked reference columns j (``picked``, int64; ``columns``,
 * ``at`` and ``before`` have ``total`` rows of n1) and the matching sorted, NaN-free row
 * of ``window`` (count rows of n2), stats.KsColumns.statistics_of_sorted's
 *
 *   max(abs(at[j] - searchsorted(w, columns[j], "right") / n2).max(),
 *       abs(before[j] - searchsorted(w, columns[j], "left") / n2).max())
 *
 * with both searches one merge of the two sorted rows. Both sides are NaN-free (the
 * caller's contract, as KsColumns'), so the plain order is numpy's order.
 */
static PyObject *
ks_statistics(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *o_columns, *o_at, *o_before, *o_picked, *o_window, *o_out;
    Py_ssize_t count, total, n1, n2;
    if (!PyArg_ParseTuple(args, "OOOOOOnnnn", &o_columns, &o_at, &o_before, &o_picked,
                          &o_window, &o_out, &count, &total, &n1, &n2))
        return NULL;
    Py_buffer columns, at, before, picked, window, out;
    int taken = 0;
    if (take(o_columns, &columns, total * n1, 0, 0, "columns") < 0)
        goto release;
    taken++;
    if (take(o_at, &at, total * n1, 0, 0, "at") < 0)
        goto release;
    taken++;
    if (take(o_before, &before, total * n1, 0, 0, "before") < 0)
        goto release;
    taken++;
    if (take(o_picked, &picked, count, 0, 1, "picked") < 0)
        goto release;
    taken++;
    if (take(o_window, &window, count * n2, 0, 0, "window") < 0)
        goto release;
    taken++;
    if (take(o_out, &out, count, 1, 0, "out") < 0)
        goto release;
    taken++;
    const int64_t *which = picked.buf;
    for (Py_ssize_t r = 0; r < count; r++) {
        if (which[r] < 0 || which[r] >= total) {
            PyErr_SetString(PyExc_ValueError, "ks_statistics: picked column out of range");
            goto release;
        }
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        Py_ssize_t j = which[r];
        const double *v = (const double *)columns.buf + j * n1;
        const double *ref_at = (const double *)at.buf + j * n1;
        const double *ref_before = (const double *)before.buf + j * n1;
        const double *w = (const double *)window.buf + r * n2;
        Py_ssize_t right = 0, left = 0; /* window values <= v[i], < v[i] */
        double at_gap = 0.0, before_gap = 0.0;
        for (Py_ssize_t i = 0; i < n1; i++) {
            while (right < n2 && !(v[i] < w[right])) /* NaN-free rows: plain order */
                right++;
            while (left < n2 && w[left] < v[i])
                left++;
            double a = fabs(ref_at[i] - (double)right / (double)n2);
            double b = fabs(ref_before[i] - (double)left / (double)n2);
            at_gap = i ? nan_max(at_gap, a) : a;
            before_gap = i ? nan_max(before_gap, b) : b;
        }
        ((double *)out.buf)[r] = nan_max(at_gap, before_gap);
    }
    taken = -taken; /* success: release all */
release:
    if (taken < 0)
        taken = -taken;
    if (taken >= 6)
        PyBuffer_Release(&out);
    if (taken >= 5)
        PyBuffer_Release(&window);
    if (taken >= 4)
        PyBuffer_Release(&picked);
    if (taken >= 3)
        PyBuffer_Release(&before);
    if (taken >= 2)
        PyBuffer_Release(&at);
    if (taken >= 1)
        PyBuffer_Release(&columns);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* fill_rows(rows, names, out) -> bool
 *
 *   out[i * width + j] = float(rows[i][names[j]])
 *
 * for block.py's FeatureBlock.of (the batch's features as one matrix): True when every
 * row is a dict holding exactly ``names`` and every value is a float or an int (bools
 * included) that converts to a double, as ``array("d", ...)`` converts them. False, with
 * ``out`` incomplete, at the first row or value that is anything else (a string, None,
 * a float subclass, an integer past a double's range): the caller's Python path then
 * decides, so both give the same matrix or refuse the same batch.
 */
static PyObject *
fill_rows(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *rows, *names, *o_out;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &rows, &PyTuple_Type, &names, &o_out))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows), width = PyTuple_GET_SIZE(names);
    Py_buffer out;
    if (take(o_out, &out, n * width, 1, 0, "out") < 0)
        return NULL;
    double *cells = (double *)out.buf;
    int ok = 1;
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyDict_CheckExact(row) || PyDict_GET_SIZE(row) != width) {
            ok = 0;
            break;
        }
        for (Py_ssize_t j = 0; j < width; j++) {
            PyObject *value = PyDict_GetItemWithError(row, PyTuple_GET_ITEM(names, j));
            double cell;
            if (value == NULL) {
                ok = 0;
                break;
            }
            if (PyFloat_CheckExact(value)) {
                cell = PyFloat_AS_DOUBLE(value);
            } else if (PyLong_CheckExact(value) || PyBool_Check(value)) {
                cell = PyLong_AsDouble(value);
                if (cell == -1.0 && PyErr_Occurred()) {
                    ok = 0;
                    break;
                }
            } else {
                ok = 0;
                break;
            }
            cells[i * width + j] = cell;
        }
    }
    PyBuffer_Release(&out);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return NULL; /* a key whose hash or comparison failed: not ours to hide */
        PyErr_Clear();
    }
    return PyBool_FromLong(ok);
}

/* finite_floats(features, longest) -> bool
 *
 *   bool(features) and {type(v) for v in features.values()} == {float}
 *   and math.isfinite(sum(features.values()))
 *   and all(0 < len(k) <= longest for k in features)
 *
 * for events.py's decoder (most events are all floats): one pass, where the Python
 * expression builds a set of types and sums in a second pass, and a third looks at the
 * names. The sum is Python 3.11's: doubles added left to right from 0.0, so a
 * finite-valued event whose sum overflows gives False here as there (the careful path
 * then takes it, and accepts it). A name that is not an exact str gives False.
 */
static int
all_finite_floats(PyObject *features, Py_ssize_t longest)
{
    if (!PyDict_CheckExact(features) || PyDict_GET_SIZE(features) == 0)
        return 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    double sum = 0.0;
    while (PyDict_Next(features, &pos, &key, &value)) {
        if (!PyFloat_CheckExact(value) || !PyUnicode_CheckExact(key))
            return 0;
        Py_ssize_t length = PyUnicode_GET_LENGTH(key);
        if (length == 0 || length > longest)
            return 0;
        sum += PyFloat_AS_DOUBLE(value);
    }
    return isfinite(sum);
}

static PyObject *
finite_floats(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *features;
    Py_ssize_t longest;
    if (!PyArg_ParseTuple(args, "On", &features, &longest))
        return NULL;
    return PyBool_FromLong(all_finite_floats(features, longest));
}

/* plain_event(obj, max_id_length, max_features, longest, max_ts) -> tuple | None
 *
 * (id, float(ts), features, label) for the event events.py's _check takes as it is and
 * the decoder sees most: an exact dict whose "id" is an exact str of 1 to max_id_length
 * characters, whose "ts" is an exact float or int strictly within +-max_ts (and finite),
 * whose "label" is absent, null, an exact str, a bool or an exact int that fits in a C
 * long long, and whose "features" pass finite_floats with 1 to max_features entries.
 * Anything else gives None, and _check decides (with its reason): so this one answers
 * either what _check answers or nothing. One call where _check takes several dozen
 * bytecodes and lookups (0.8 us an event).
 */
static PyObject *s_id, *s_ts, *s_label, *s_features; /* interned keys, made at import */

static PyObject *
plain_event(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *obj;
    Py_ssize_t max_id_length, max_features, longest;
    double max_ts;
    if (!PyArg_ParseTuple(args, "Onnnd", &obj, &max_id_length, &max_features, &longest,
                          &max_ts))
        return NULL;
    if (!PyDict_CheckExact(obj))
        Py_RETURN_NONE;
    PyObject *event_id = PyDict_GetItem(obj, s_id); /* borrowed; str keys: no error */
    if (event_id == NULL || !PyUnicode_CheckExact(event_id))
        Py_RETURN_NONE;
    Py_ssize_t id_length = PyUnicode_GET_LENGTH(event_id);
    if (id_length == 0 || id_length > max_id_length)
        Py_RETURN_NONE;
    PyObject *ts = PyDict_GetItem(obj, s_ts);
    double when;
    if (ts == NULL)
        Py_RETURN_NONE;
    if (PyFloat_CheckExact(ts)) {
        when = PyFloat_AS_DOUBLE(ts);
    }
    else if (PyLong_CheckExact(ts)) {
        int overflow = 0;
        long long whole = PyLong_AsLongLongAndOverflow(ts, &overflow);
        if (overflow || (whole == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        when = (double)whole; /* rounded beyond 2**53, never across the bound below */
    }
    else {
        Py_RETURN_NONE;
    }
    if (!isfinite(when) || !(when > -max_ts && when < max_ts))
        Py_RETURN_NONE;
    PyObject *label = PyDict_GetItem(obj, s_label);
    if (label == NULL) {
        label = Py_None;
    }
    else if (label != Py_None && !PyUnicode_CheckExact(label) && !PyBool_Check(label)) {
        if (!PyLong_CheckExact(label))
            Py_RETURN_NONE;
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(label, &overflow);
        if (overflow || (value == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    }
    PyObject *features = PyDict_GetItem(obj, s_features);
    if (features == NULL || !PyDict_CheckExact(features))
        Py_RETURN_NONE;
    if (PyDict_GET_SIZE(features) > max_features || !all_finite_floats(features, longest))
        Py_RETURN_NONE;
    PyObject *seconds = PyFloat_FromDouble(when);
    if (seconds == NULL)
        return NULL;
    PyObject *result = PyTuple_Pack(4, event_id, seconds, features, label);
    Py_DECREF(seconds);
    return result;
}

static PyMethodDef methods[] = {
    {"finite_floats", finite_floats, METH_VARARGS, "Exact floats, finite sum, names (events.py)."},
    {"plain_event", plain_event, METH_VARARGS, "A plain event's fields, or None (events.py)."},
    {"fill_rows", fill_rows, METH_VARARGS, "Feature dicts into a float64 matrix (block.py)."},
    {"increments", increments, METH_VARARGS, "A chunk's cumulative CUSUM increments."},
    {"walk_summarize", walk_summarize, METH_VARARGS, "A segment of the CUSUM path, summarized."},
    {"searchsorted_rows", searchsorted_rows, METH_VARARGS, "searchsorted, row by row."},
    {"ks_statistics", ks_statistics, METH_VARARGS, "Two-sample KS statistics of sorted rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_loops", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__loops(void)
{
    s_id = PyUnicode_InternFromString("id");
    s_ts = PyUnicode_InternFromString("ts");
    s_label = PyUnicode_InternFromString("label");
    s_features = PyUnicode_InternFromString("features");
    if (s_id == NULL || s_ts == NULL || s_label == NULL || s_features == NULL)
        return NULL;
    return PyModule_Create(&module);
}
