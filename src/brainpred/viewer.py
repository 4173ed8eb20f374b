"""Interactive cortical maps: one self-contained HTML viewer (no network, no plotting library).

The viewer embeds nilearn's fsaverage5 inflated mesh once (both hemispheres) and the maps as
data; a small JavaScript software rasteriser (z-buffer, per-vertex colours, headlight shading)
draws the four standard views (left and right, lateral and medial) on one ``<canvas>``, so it
needs neither WebGL nor a GPU. Controls: a map selector, a distance slider for maps with one
value per distance (F(d)), a threshold, drag to rotate (double-click resets) and the value of
the vertex under the pointer. fsaverage6 maps are cut to fsaverage5 as in
:func:`brainpred.figures.split_hemis`.

Maps are stored as little-endian float16 (three significant digits; NaN kept, drawn as the
sulcal background), the mesh as float32 coordinates and uint16 faces, all base64 in one JSON
block: about 0.7 MB of mesh plus 55 kB per map.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass

import numpy as np

from .figures import SYNTHETIC_MARK, colormap, fsaverage5_mesh, split_hemis
from .io import atomic_write

__all__ = ["SurfaceMap", "group_maps", "viewer_html", "write_viewer", "VIEWER_CAPTION"]

VIEWER_CAPTION = (
    "Interactive group maps on the fsaverage5 inflated surface (fsaverage6 maps are shown on "
    "their fsaverage5 vertices): choose a map, move the distance slider for F(d) (one colour "
    "range for every distance), drag to rotate, double-click to reset; the value under the "
    "pointer is shown at half precision (3 significant digits; the exact maps are the group "
    "GIfTI files). Grey: sulcal depth where the map is NaN or below the threshold.")


@dataclass(frozen=True)
class SurfaceMap:
    """One map (or a stack of maps along a distance axis) of the viewer.

    Parameters
    ----------
    key : str
        Identifier (HTML option value).
    label : str
        Shown in the map selector and the colour bar.
    values : array_like, shape (n_vertices,) or (n_steps, n_vertices)
        fsaverage5 or fsaverage6 values, left then right; NaN is drawn as background.
    cmap : str
        Matplotlib or nilearn colormap name.
    vmin, vmax : float
        Colour range (shared by every step of a stack).
    steps : sequence of float, optional
        The value of each row of a stack (e.g. the distances d of F(d)); None for one map.
    step_name : str
        Name of the step axis (slider label), e.g. ``"d"``.
    """

    key: str
    label: str
    values: object
    cmap: str
    vmin: float
    vmax: float
    steps: tuple | None = None
    step_name: str = "d"


def _b64(array, dtype):
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _finite_range(values, symmetric=False, vmin=None):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if symmetric:
        m = float(np.max(np.abs(v))) if v.size else 1.0
        return -(m or 1.0), (m or 1.0)
    lo = float(v.min()) if v.size else 0.0
    lo = lo if vmin is None else float(vmin)
    hi = float(v.max()) if v.size else 1.0
    return lo, hi if hi > lo else lo + 1e-6


def group_maps(group):
    """The viewer's maps of a group result (``brainpred.group.forecast_group`` keys).

    Parameters
    ----------
    group : mapping
        ``brain_score`` (V,), ``dstar`` (V,), ``forecast_score`` (n_d, V), ``distances``
        (n_d,), optionally ``noise_ceiling`` (V,).

    Returns
    -------
    list of SurfaceMap
        Brain score, (noise ceiling,) d*, F(d) with a distance slider.
    """
    distances = np.asarray(group["distances"], dtype=np.float64)
    maps = [SurfaceMap("brain", "Brain score R(X) (Pearson r)", group["brain_score"], "hot",
                       *_finite_range(group["brain_score"], vmin=0.0))]
    if "noise_ceiling" in group:
        maps.append(SurfaceMap("ceiling", "Noise ceiling (Pearson r)", group["noise_ceiling"],
                               "hot", *_finite_range(group["noise_ceiling"], vmin=0.0)))
    hi = float(distances.max()) if float(distances.max()) > float(distances.min()) else (
        float(distances.min()) + 1.0)
    maps.append(SurfaceMap("dstar", "Forecast distance d* (words)", group["dstar"], "viridis",
                           float(distances.min()), hi))
    maps.append(SurfaceMap("forecast", "Forecast score F(d) = R(X + W_d) - R(X)",
                           group["forecast_score"], "cold_hot",
                           *_finite_range(group["forecast_score"], symmetric=True),
                           steps=tuple(float(d) for d in distances), step_name="d"))
    return maps


def _mesh_payload():
    out = []
    for hemi in ("left", "right"):
        coords, faces, sulc = fsaverage5_mesh()[hemi]
        sulc = np.asarray(sulc, dtype=np.float64)
        lo, hi = np.nanpercentile(sulc, [2, 98])
        # light grey on gyri, darker in sulci (FreeSurfer sulc > 0 in sulci)
        grey = 0.8 - 0.35 * np.clip((sulc - lo) / max(hi - lo, 1e-9), 0, 1)
        out.append({"coords": _b64(coords, "<f4"), "faces": _b64(faces, "<u2"),
                    "bg": _b64(np.round(grey * 255), "u1"), "n": int(coords.shape[0])})
    return out


def _map_payload(m):
    values = np.asarray(m.values, dtype=np.float64)
    stack = values[None] if values.ndim == 1 else values
    if m.steps is not None and len(m.steps) != stack.shape[0]:
        raise ValueError(f"viewer map {m.key!r}: {len(m.steps)} steps for {stack.shape[0]} rows")
    rows = []
    for row in stack:
        # float16 keeps NaN; finite values beyond its range (65504) are clipped
        half = np.clip(np.concatenate(split_hemis(row)), -65504.0, 65504.0)
        rows.append(_b64(half, "<f2"))
    lut = colormap(m.cmap)(np.linspace(0, 1, 256))[:, :3]
    return {"key": m.key, "label": m.label, "vmin": float(m.vmin), "vmax": float(m.vmax),
            "steps": None if m.steps is None else [float(s) for s in m.steps],
            "step_name": m.step_name, "lut": _b64(np.round(lut * 255), "u1"), "values": rows}


_CSS = """
.bpv { font-family: inherit; margin: 1em 0; }
.bpv-controls { display: flex; flex-wrap: wrap; gap: 0.6em 1.4em; align-items: center;
                margin-bottom: 0.5em; font-size: 0.95em; }
.bpv-controls label { white-space: nowrap; }
.bpv-controls input[type=range] { width: 14em; vertical-align: middle; }
.bpv-controls input[type=number] { width: 6em; }
.bpv canvas.bpv-view { width: 100%; max-width: 880px; border: 1px solid #ddd;
                       cursor: grab; touch-action: none; display: block; }
.bpv-bar { display: flex; align-items: center; gap: 0.5em; margin-top: 0.4em;
           font-size: 0.9em; }
.bpv-bar canvas { width: 300px; height: 14px; border: 1px solid #999; }
.bpv-hover { font-size: 0.9em; color: #333; min-height: 1.3em; margin-top: 0.3em; }
.bpv-synthetic { color: #8b0000; font-weight: bold; }
"""

_JS = r"""
(function () {
  "use strict";
  var root = document.getElementById("bpv");
  var data = JSON.parse(document.getElementById("bpv-data").textContent);
  function bytes(b64) {
    var s = atob(b64), u = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u;
  }
  var HALF = new Float32Array(65536);
  (function () {
    for (var h = 0; h < 65536; h++) {
      var sg = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
      HALF[h] = e === 0 ? sg * Math.pow(2, -14) * (f / 1024)
        : e === 31 ? (f ? NaN : sg * Infinity) : sg * Math.pow(2, e - 15) * (1 + f / 1024);
    }
  })();
  function halves(b64) {
    var u = new Uint16Array(bytes(b64).buffer), out = new Float32Array(u.length);
    for (var i = 0; i < u.length; i++) out[i] = HALF[u[i]];
    return out;
  }
  var hemis = data.mesh.map(function (h) {
    var c = new Float32Array(bytes(h.coords).buffer), f = new Uint16Array(bytes(h.faces).buffer);
    var n = h.n, nrm = new Float32Array(3 * n), cen = [0, 0, 0], rad = 0, i, k;
    for (i = 0; i < n; i++) for (k = 0; k < 3; k++) cen[k] += c[3 * i + k] / n;
    for (i = 0; i < f.length; i += 3) {
      var a = 3 * f[i], b = 3 * f[i + 1], d = 3 * f[i + 2];
      var ux = c[b] - c[a], uy = c[b + 1] - c[a + 1], uz = c[b + 2] - c[a + 2];
      var vx = c[d] - c[a], vy = c[d + 1] - c[a + 1], vz = c[d + 2] - c[a + 2];
      var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      [a, b, d].forEach(function (j) { nrm[j] += nx; nrm[j + 1] += ny; nrm[j + 2] += nz; });
    }
    for (i = 0; i < n; i++) {
      var l = Math.hypot(nrm[3 * i], nrm[3 * i + 1], nrm[3 * i + 2]) || 1;
      for (k = 0; k < 3; k++) nrm[3 * i + k] /= l;
      rad = Math.max(rad, Math.hypot(c[3 * i] - cen[0], c[3 * i + 1] - cen[1],
                                     c[3 * i + 2] - cen[2]));
    }
    return {c: c, f: f, n: n, nrm: nrm, cen: cen, rad: rad, bg: bytes(h.bg)};
  });
  var maps = data.maps.map(function (m) {
    return {key: m.key, label: m.label, vmin: m.vmin, vmax: m.vmax, steps: m.steps,
            stepName: m.step_name, lut: bytes(m.lut), b64: m.values, rows: []};
  });
  function row(m, s) {
    if (!m.rows[s]) m.rows[s] = halves(m.b64[s]);
    return m.rows[s];
  }
  var canvas = root.querySelector("canvas.bpv-view"), ctx = canvas.getContext("2d");
  var W = canvas.width, H = canvas.height, PW = W / 2, PH = H / 2;
  var img = ctx.createImageData(W, H), pix = img.data;
  var zbuf = new Float32Array(W * H), ids = new Int32Array(W * H);
  var PANELS = [{h: 0, az: 180, name: "Left lateral"}, {h: 0, az: 0, name: "Left medial"},
                {h: 1, az: 0, name: "Right lateral"}, {h: 1, az: 180, name: "Right medial"}];
  var sel = root.querySelector(".bpv-map"), slider = root.querySelector(".bpv-step");
  var stepOut = root.querySelector(".bpv-step-value"), thr = root.querySelector(".bpv-thr");
  var hover = root.querySelector(".bpv-hover"), stepBox = root.querySelector(".bpv-stepbox");
  var state = {map: 0, step: 0, thr: 0, daz: 0, el: 0};
  maps.forEach(function (m, i) {
    var o = document.createElement("option");
    o.value = m.key; o.textContent = m.label; sel.appendChild(o);
  });
  function fmt(v) { return isFinite(v) ? Number(v.toPrecision(3)).toString() : "n/a"; }
  function colours(m, vals, hi, off) {
    var n = hi.n, out = new Float32Array(3 * n), span = m.vmax - m.vmin;
    for (var i = 0; i < n; i++) {
      var v = vals[off + i];
      if (isFinite(v) && !(Math.abs(v) < state.thr)) {
        var t = Math.round(Math.min(1, Math.max(0, (v - m.vmin) / span)) * 255);
        out[3 * i] = m.lut[3 * t]; out[3 * i + 1] = m.lut[3 * t + 1];
        out[3 * i + 2] = m.lut[3 * t + 2];
      } else {
        out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = hi.bg[i];
      }
    }
    return out;
  }
  function drawPanel(p, x0, y0, col) {
    var hm = hemis[p.h], c = hm.c, f = hm.f, n = hm.n, nrm = hm.nrm;
    var az = (p.az + state.daz) * Math.PI / 180, el = state.el * Math.PI / 180;
    var d = [Math.cos(el) * Math.cos(az), Math.cos(el) * Math.sin(az), Math.sin(el)];
    var r = [d[1], -d[0], 0], rl = Math.hypot(r[0], r[1]) || 1;
    r = [r[0] / rl, r[1] / rl, 0];
    var u = [r[1] * d[2] - r[2] * d[1], r[2] * d[0] - r[0] * d[2], r[0] * d[1] - r[1] * d[0]];
    var sc = 0.6 * Math.min(PW, PH) / hm.rad, cx = x0 + PW / 2, cy = y0 + PH / 2 + 8;
    var sx = new Float32Array(n), sy = new Float32Array(n), sz = new Float32Array(n);
    var sh = new Float32Array(3 * n), i;
    for (i = 0; i < n; i++) {
      var px = c[3 * i] - hm.cen[0], py = c[3 * i + 1] - hm.cen[1], pz = c[3 * i + 2] - hm.cen[2];
      sx[i] = cx + sc * (px * r[0] + py * r[1]);
      sy[i] = cy - sc * (px * u[0] + py * u[1] + pz * u[2]);
      sz[i] = px * d[0] + py * d[1] + pz * d[2];
      var lum = 0.3 + 0.7 * Math.abs(nrm[3 * i] * d[0] + nrm[3 * i + 1] * d[1]
                                     + nrm[3 * i + 2] * d[2]);
      sh[3 * i] = col[3 * i] * lum; sh[3 * i + 1] = col[3 * i + 1] * lum;
      sh[3 * i + 2] = col[3 * i + 2] * lum;
    }
    var base = p.h * hemis[0].n, xa = x0, xb = x0 + PW - 1, ya = y0, yb = y0 + PH - 1;
    for (var t = 0; t < f.length; t += 3) {
      var a = f[t], b = f[t + 1], e = f[t + 2];
      var ax = sx[a], ay = sy[a], bx = sx[b], by = sy[b], ex = sx[e], ey = sy[e];
      var area = (bx - ax) * (ey - ay) - (ex - ax) * (by - ay);
      if (area === 0) continue;
      var inv = 1 / area;
      var minX = Math.max(xa, Math.floor(Math.min(ax, bx, ex)));
      var maxX = Math.min(xb, Math.ceil(Math.max(ax, bx, ex)));
      var minY = Math.max(ya, Math.floor(Math.min(ay, by, ey)));
      var maxY = Math.min(yb, Math.ceil(Math.max(ay, by, ey)));
      for (var y = minY; y <= maxY; y++) {
        var qy = y + 0.5;
        for (var x = minX; x <= maxX; x++) {
          var qx = x + 0.5;
          var w0 = ((bx - qx) * (ey - qy) - (ex - qx) * (by - qy)) * inv;
          if (w0 < 0) continue;
          var w1 = ((ex - qx) * (ay - qy) - (ax - qx) * (ey - qy)) * inv;
          if (w1 < 0) continue;
          var w2 = 1 - w0 - w1;
          if (w2 < 0) continue;
          var z = w0 * sz[a] + w1 * sz[b] + w2 * sz[e], k = y * W + x;
          if (z <= zbuf[k]) continue;
          zbuf[k] = z;
          var q = 4 * k;
          pix[q] = w0 * sh[3 * a] + w1 * sh[3 * b] + w2 * sh[3 * e];
          pix[q + 1] = w0 * sh[3 * a + 1] + w1 * sh[3 * b + 1] + w2 * sh[3 * e + 1];
          pix[q + 2] = w0 * sh[3 * a + 2] + w1 * sh[3 * b + 2] + w2 * sh[3 * e + 2];
          ids[k] = base + (w0 >= w1 && w0 >= w2 ? a : w1 >= w2 ? b : e);
        }
      }
    }
  }
  function drawBar(m) {
    var bar = root.querySelector(".bpv-bar canvas"), bc = bar.getContext("2d");
    var bi = bc.createImageData(bar.width, bar.height);
    for (var x = 0; x < bar.width; x++) {
      var t = Math.round(x / (bar.width - 1) * 255);
      for (var y = 0; y < bar.height; y++) {
        var q = 4 * (y * bar.width + x);
        bi.data[q] = m.lut[3 * t]; bi.data[q + 1] = m.lut[3 * t + 1];
        bi.data[q + 2] = m.lut[3 * t + 2]; bi.data[q + 3] = 255;
      }
    }
    bc.putImageData(bi, 0, 0);
    root.querySelector(".bpv-min").textContent = fmt(m.vmin);
    root.querySelector(".bpv-max").textContent = fmt(m.vmax);
    root.querySelector(".bpv-label").textContent = m.label;
  }
  function title(m) {
    return m.label + (m.steps ? " at " + m.stepName + " = " + fmt(m.steps[state.step]) : "");
  }
  function render() {
    var m = maps[state.map], vals = row(m, m.steps ? state.step : 0);
    for (var i = 0; i < pix.length; i += 4) {
      pix[i] = pix[i + 1] = pix[i + 2] = 255; pix[i + 3] = 255;
    }
    zbuf.fill(-Infinity); ids.fill(-1);
    var cols = [colours(m, vals, hemis[0], 0), colours(m, vals, hemis[1], hemis[0].n)];
    PANELS.forEach(function (p, j) {
      drawPanel(p, (j % 2) * PW, Math.floor(j / 2) * PH, cols[p.h]);
    });
    ctx.putImageData(img, 0, 0);
    ctx.fillStyle = "#222"; ctx.font = "15px sans-serif"; ctx.textAlign = "center";
    PANELS.forEach(function (p, j) {
      ctx.fillText(p.name, (j % 2) * PW + PW / 2, Math.floor(j / 2) * PH + 18);
    });
    ctx.textAlign = "left"; ctx.font = "bold 14px sans-serif";
    ctx.fillText(title(m), 8, H - 8);
    drawBar(m);
    root.dataset.rendered = String(Number(root.dataset.rendered || 0) + 1);
  }
  function syncControls() {
    var m = maps[state.map];
    sel.value = m.key;
    stepBox.style.visibility = m.steps ? "visible" : "hidden";
    slider.disabled = !m.steps;
    if (m.steps) {
      slider.max = String(m.steps.length - 1);
      state.step = Math.min(state.step, m.steps.length - 1);
      slider.value = String(state.step);
      stepOut.textContent = m.stepName + " = " + fmt(m.steps[state.step]);
    }
  }
  function update() { syncControls(); render(); }
  sel.addEventListener("change", function () { state.map = sel.selectedIndex; update(); });
  slider.addEventListener("input", function () { state.step = Number(slider.value); update(); });
  thr.addEventListener("input", function () {
    state.thr = Math.abs(Number(thr.value)) || 0; render();
  });
  var drag = null, pending = false;
  function pos(ev) {
    var b = canvas.getBoundingClientRect();
    return [(ev.clientX - b.left) * W / b.width, (ev.clientY - b.top) * H / b.height];
  }
  canvas.addEventListener("pointerdown", function (ev) {
    drag = [ev.clientX, ev.clientY, state.daz, state.el];
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointerup", function () { drag = null; });
  canvas.addEventListener("pointermove", function (ev) {
    if (drag) {
      state.daz = drag[2] + (ev.clientX - drag[0]) * 0.5;
      state.el = Math.max(-89, Math.min(89, drag[3] + (ev.clientY - drag[1]) * 0.5));
      if (!pending) {
        pending = true;
        requestAnimationFrame(function () { pending = false; render(); });
      }
      return;
    }
    var p = pos(ev), x = Math.floor(p[0]), y = Math.floor(p[1]);
    var id = (x >= 0 && y >= 0 && x < W && y < H) ? ids[y * W + x] : -1;
    if (id < 0) { hover.textContent = ""; return; }
    var m = maps[state.map], v = row(m, m.steps ? state.step : 0)[id], n0 = hemis[0].n;
    hover.textContent = (id < n0 ? "Left" : "Right") + " hemisphere, vertex " +
      (id < n0 ? id : id - n0) + ": " + title(m) + ": " + fmt(v);
  });
  canvas.addEventListener("dblclick", function () { state.daz = 0; state.el = 0; render(); });
  window.brainpredViewer = {
    state: state, maps: maps.map(function (m) { return m.key; }), render: render,
    show: function (key, step) {
      state.map = Math.max(0, this.maps.indexOf(key));
      if (step !== undefined) state.step = step;
      update();
    }
  };
  update();
  root.dataset.ready = "1";
})();
"""


def _json_script(payload):
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/")


def viewer_html(maps, synthetic, title="Interactive maps"):
    """The viewer as an HTML fragment (a ``<div>`` with its style, data and script).

    One viewer per page (its element ids start with ``bpv``).

    Parameters
    ----------
    maps : list of SurfaceMap
    synthetic : bool
        When True the viewer's heading says the maps come from the synthetic demo dataset.
    title : str

    Returns
    -------
    str
    """
    if not maps:
        raise ValueError("viewer_html: no maps")
    payload = {"mesh": _mesh_payload(), "maps": [_map_payload(m) for m in maps]}
    mark = (f"<span class=\"bpv-synthetic\">{SYNTHETIC_MARK}</span> — " if synthetic else "")
    return "\n".join([
        f"<style>{_CSS}</style>",
        "<div class=\"bpv\" id=\"bpv\">",
        f"<p><strong>{mark}{html.escape(title)}</strong></p>",
        "<div class=\"bpv-controls\">",
        "<label>Map <select class=\"bpv-map\" aria-label=\"map\"></select></label>",
        "<span class=\"bpv-stepbox\"><label>Distance <input class=\"bpv-step\" type=\"range\" "
        "min=\"0\" max=\"0\" step=\"1\" value=\"0\" aria-label=\"distance\"></label> "
        "<output class=\"bpv-step-value\"></output></span>",
        "<label>Hide |value| &lt; <input class=\"bpv-thr\" type=\"number\" min=\"0\" "
        "step=\"any\" value=\"0\" aria-label=\"threshold\"></label>",
        "</div>",
        "<canvas class=\"bpv-view\" width=\"880\" height=\"640\"></canvas>",
        "<div class=\"bpv-bar\"><span class=\"bpv-min\"></span>"
        "<canvas width=\"300\" height=\"14\"></canvas><span class=\"bpv-max\"></span>"
        "<span class=\"bpv-label\"></span></div>",
        "<div class=\"bpv-hover\"></div>",
        "</div>",
        f"<script type=\"application/json\" id=\"bpv-data\">{_json_script(payload)}</script>",
        f"<script>{_JS}</script>",
    ])


def write_viewer(out_html, maps, synthetic, title="brainpred interactive maps"):
    """Write the viewer as a standalone, self-contained HTML page (atomically).

    Parameters
    ----------
    out_html : str or Path
    maps : list of SurfaceMap
    synthetic : bool
    title : str

    Returns
    -------
    out_html
    """
    page = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
            f"<title>{html.escape(title)}{' (SYNTHETIC DATA)' if synthetic else ''}</title>",
            "<style>body { font-family: sans-serif; max-width: 920px; margin: 1em auto; }"
            "</style></head><body>", viewer_html(maps, synthetic, title), "</body></html>"]
    with atomic_write(out_html) as f:
        f.write("\n".join(page) + "\n")
    return out_html
