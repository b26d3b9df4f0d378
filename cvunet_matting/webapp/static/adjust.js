// The task page's "Adjust edges" panel: a live preview of the edge controls, drawn on a canvas in the
// browser from the task's raw matte (the model's alpha before any edge step) and its original, with no
// request per slider move; "Save" renders it on the server (POST /page/tasks/<id>/render) into a new
// task, the old one left as it is. The steps follow image/solid.py and image/edges.py closely enough
// to judge by eye (solid subject, thresholds, erosion by a disc, a Gaussian feather); refining the
// edges and removing the background colour run on the server only, when saved.
"use strict";

(function () {
  // The preview's size at most: a 12 MP photo is drawn at about 1 MP, so that every step stays a few
  // tens of milliseconds and a slider follows the hand. Edge sizes are scaled down with it.
  const PREVIEW_PIXELS = 1000000;
  // edges.py feathers with a kernel of 2*feather+1 at sigma feather/2: a Gaussian cut at 2 sigma,
  // whose spread is that of a whole one of 0.88 sigma; the preview's blur has no cut, so it takes that.
  const CUT_GAUSSIAN = 0.88;
  // A preview of fewer pixels than this is drawn whole even while a slider is dragged.
  const QUICK_FROM = 250000;
  const NUMBERS = ["alpha_threshold", "opaque_threshold", "erode", "feather"];
  const SWITCHES = ["solidify", "refine", "decontaminate"];

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("could not load " + url));
      img.src = url;
    });
  }

  // The image's pixels (RGBA, not premultiplied) drawn at w x h.
  function pixelsOf(img, w, h) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, w, h);
    return ctx.getImageData(0, 0, w, h).data;
  }

  // ------------------------------------------------------------ resampling
  function resize(src, sw, sh, dw, dh) {
    if (sw === dw && sh === dh) return src;
    const out = new Uint8Array(dw * dh);
    const fx = sw / dw;
    const fy = sh / dh;
    for (let y = 0; y < dh; y++) {
      const sy = Math.min(Math.max((y + 0.5) * fy - 0.5, 0), sh - 1);
      const y0 = Math.floor(sy);
      const y1 = Math.min(y0 + 1, sh - 1);
      const wy = sy - y0;
      for (let x = 0; x < dw; x++) {
        const sx = Math.min(Math.max((x + 0.5) * fx - 0.5, 0), sw - 1);
        const x0 = Math.floor(sx);
        const x1 = Math.min(x0 + 1, sw - 1);
        const wx = sx - x0;
        const top = src[y0 * sw + x0] * (1 - wx) + src[y0 * sw + x1] * wx;
        const bottom = src[y1 * sw + x0] * (1 - wx) + src[y1 * sw + x1] * wx;
        out[y * dw + x] = Math.round(top * (1 - wy) + bottom * wy);
      }
    }
    return out;
  }

  // ------------------------------------------------------------ solid subject (solid.py)
  const FAR = 1e20;

  // Squared distances along one line to its nearest site (f: 0 at sites, FAR elsewhere), exactly:
  // the lower envelope of parabolas (Felzenszwalb and Huttenlocher, "Distance Transforms of Sampled
  // Functions", 2012).
  function envelope(f, n, d, v, z) {
    let k = 0;
    v[0] = 0;
    z[0] = -FAR;
    z[1] = FAR;
    for (let q = 1; q < n; q++) {
      let s;
      for (;;) {
        const p = v[k];
        s = (f[q] + q * q - (f[p] + p * p)) / (2 * q - 2 * p);
        if (s > z[k] || k === 0) break;
        k--;
      }
      k++;
      v[k] = q;
      z[k] = s;
      z[k + 1] = FAR;
    }
    k = 0;
    for (let q = 0; q < n; q++) {
      while (z[k + 1] < q) k++;
      d[q] = (q - v[k]) * (q - v[k]) + f[v[k]];
    }
  }

  // For every pixel, its distance to the nearest pixel where `isSite` holds (very large when none does).
  function distances(mask, w, h, isSite) {
    const n = Math.max(w, h);
    const f = new Float64Array(n);
    const d = new Float64Array(n);
    const v = new Int32Array(n);
    const z = new Float64Array(n + 1);
    const grid = new Float64Array(w * h);
    for (let i = 0; i < w * h; i++) grid[i] = mask[i] === isSite ? 0 : FAR;
    for (let x = 0; x < w; x++) {
      for (let y = 0; y < h; y++) f[y] = grid[y * w + x];
      envelope(f, h, d, v, z);
      for (let y = 0; y < h; y++) grid[y * w + x] = d[y];
    }
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) f[x] = grid[y * w + x];
      envelope(f, w, d, v, z);
      for (let x = 0; x < w; x++) grid[y * w + x] = Math.sqrt(d[x]);
    }
    return grid;
  }

  // 0 within `band` of the outline, rising to 255 at twice that (solid.py's _ramp).
  function ramp(distance, band) {
    const out = new Uint8Array(distance.length);
    for (let i = 0; i < distance.length; i++) {
      const d = Math.min(distance[i], 2 * band);
      out[i] = Math.min(255, Math.max(0, Math.floor((d - band) * (255 / band) + 0.5)));
    }
    return out;
  }

  // The matte made opaque far inside the subject and clear far from it, its outline's band as it was;
  // the distances from a copy at most `cfg.side` pixels on the full image's long side, as solid.py's.
  function solidify(alpha, w, h, full, cfg) {
    const scale = Math.min(1, cfg.side / Math.max(full.width, full.height));
    const sw = Math.max(1, Math.round(full.width * scale));
    const sh = Math.max(1, Math.round(full.height * scale));
    const small = resize(alpha, w, h, sw, sh);
    const inside = new Uint8Array(sw * sh);
    for (let i = 0; i < inside.length; i++) inside[i] = small[i] >= cfg.half ? 1 : 0;
    const band = Math.max(cfg.minBandPx, cfg.bandShare * Math.max(full.width, full.height)) * scale;
    const floor = resize(ramp(distances(inside, sw, sh, 0), band), sw, sh, w, h);
    const outer = ramp(distances(inside, sw, sh, 1), band);
    const ceiling = resize(outer.map((value) => 255 - value), sw, sh, w, h);
    const out = new Uint8Array(w * h);
    for (let i = 0; i < out.length; i++) out[i] = Math.min(Math.max(alpha[i], floor[i]), ceiling[i]);
    return out;
  }

  // ------------------------------------------------------------ erosion (a disc's minimum)
  // The minimum over [i - k, i + k] of each place of a line, a window's outside ignored (as the
  // server's replicated border does for a minimum). Three passes whatever k (van Herk, 1992; Gil and
  // Werman, 1993): the line, padded with 255, is cut into blocks of the window's size; a window spans
  // the end of one block and the start of the next, whose running minimums are kept. `scratch`: three
  // Uint8Arrays of at least n + 2k places.
  function minLine(src, dst, n, k, scratch) {
    const [padded, ahead, behind] = scratch;
    const size = 2 * k + 1;
    const len = n + 2 * k;
    padded.fill(255, 0, k);
    padded.set(src.subarray(0, n), k);
    padded.fill(255, k + n, len);
    for (let start = 0; start < len; start += size) {
      const end = Math.min(start + size, len);
      let low = 255;
      for (let i = start; i < end; i++) {
        if (padded[i] < low) low = padded[i];
        ahead[i] = low;
      }
      low = 255;
      for (let i = end - 1; i >= start; i--) {
        if (padded[i] < low) low = padded[i];
        behind[i] = low;
      }
    }
    for (let i = 0; i < n; i++) {
      const left = behind[i];
      const right = ahead[i + 2 * k];
      dst[i] = left < right ? left : right;
    }
  }

  // Each row's minimum over [x - k, x + k].
  function minRows(src, w, h, k) {
    if (k <= 0) return src;
    const out = new Uint8Array(src.length);
    const scratch = [0, 1, 2].map(() => new Uint8Array(w + 2 * k));
    for (let y = 0; y < h; y++) minLine(src.subarray(y * w, y * w + w), out.subarray(y * w, y * w + w), w, k, scratch);
    return out;
  }

  // min(src(p), src(p + (sx, sy))), src(p) alone where p + (sx, sy) is off the image: row by row, so
  // that a column or a diagonal costs what a row does.
  function shiftMin(src, w, h, sx, sy) {
    const out = Uint8Array.from(src);
    const x0 = Math.max(0, -sx);
    const x1 = Math.min(w, w - sx);
    for (let y = Math.max(0, -sy); y < Math.min(h, h - sy); y++) {
      const o = y * w;
      const q = (y + sy) * w + sx;
      for (let x = x0; x < x1; x++) if (src[q + x] < out[o + x]) out[o + x] = src[q + x];
    }
    return out;
  }

  // The minimum over t in [0, reach] of src(p + t (dx, dy)), off the image ignored, by doubling: a
  // pass with a copy shifted s further takes [0, c] to [0, c + s] (s <= c + 1), log2(reach) passes.
  function reachMin(src, w, h, reach, dx, dy) {
    let out = src;
    for (let covered = 0; covered < reach; ) {
      const step = Math.min(covered + 1, reach - covered);
      out = shiftMin(out, w, h, step * dx, step * dy);
      covered += step;
    }
    return out;
  }

  // The minimum over t in [-k, k] of src(p + t (dx, dy)): the line's two halves.
  function lineMin(src, w, h, k, dx, dy) {
    if (k <= 0) return src;
    const ahead = reachMin(src, w, h, k, dx, dy);
    const behind = reachMin(src, w, h, k, -dx, -dy);
    for (let i = 0; i < ahead.length; i++) if (behind[i] < ahead[i]) ahead[i] = behind[i];
    return ahead;
  }

  // Up to this radius the preview erodes by the server's own disc (cv2's MORPH_ELLIPSE), row by row;
  // beyond it by an octagon, whose cost does not grow with the radius.
  const DISC_UP_TO = 10;

  // The matte shrunk by the server's disc of radius r: the minimum, over the disc's rows, of each row's
  // minimum over that row's half-width (round(sqrt(r^2 - dy^2)), as getStructuringElement draws it).
  function erodeDisc(alpha, w, h, r) {
    const halfWidth = (dy) => Math.round(Math.sqrt(r * r - dy * dy));
    const rows = new Map();
    for (let dy = 0; dy <= r; dy++) {
      const k = halfWidth(dy);
      if (!rows.has(k)) rows.set(k, minRows(alpha, w, h, k));
    }
    const out = new Uint8Array(alpha.length).fill(255);
    for (let dy = -r; dy <= r; dy++) {
      const src = rows.get(halfWidth(dy));
      for (let y = Math.max(0, -dy); y < Math.min(h, h - dy); y++) {
        const from = (y + dy) * w;
        const to = y * w;
        for (let x = 0; x < w; x++) if (src[from + x] < out[to + x]) out[to + x] = src[from + x];
      }
    }
    return out;
  }

  // The matte shrunk by a disc of radius r, taken as a regular octagon: a square of half-side a (two
  // straight lines) then a diamond (two diagonal lines of b steps), a + 2b = r and a + b = r / sqrt(2).
  function erodeOctagon(alpha, w, h, r) {
    const b = Math.round(r * (1 - Math.SQRT1_2));
    const a = r - 2 * b;
    let out = minRows(alpha, w, h, a);
    out = lineMin(out, w, h, a, 0, 1);
    out = lineMin(out, w, h, b, 1, 1);
    return lineMin(out, w, h, b, 1, -1);
  }

  function erode(alpha, w, h, r) {
    return r <= DISC_UP_TO ? erodeDisc(alpha, w, h, r) : erodeOctagon(alpha, w, h, r);
  }

  // ------------------------------------------------------------ feather (a Gaussian, by three boxes)
  // The radii of three box blurs whose sum has the spread of a Gaussian of `sigma` (W. Jarosz, "Fast
  // Image Convolutions", 2001: boxes of two neighbouring odd widths).
  function boxRadii(sigma) {
    const ideal = Math.sqrt((12 * sigma * sigma) / 3 + 1);
    let lower = Math.floor(ideal);
    if (lower % 2 === 0) lower--;
    const many = Math.round((12 * sigma * sigma - 3 * lower * lower - 12 * lower - 9) / (-4 * lower - 4));
    return [0, 1, 2].map((i) => ((i < many ? lower : lower + 2) - 1) / 2);
  }

  // A box mean of radius r along each row (its ends replicated), from src into dst.
  function boxRows(src, dst, w, h, r) {
    const scale = 1 / (2 * r + 1);
    for (let y = 0; y < h; y++) {
      const o = y * w;
      const first = src[o];
      const last = src[o + w - 1];
      let sum = 0;
      for (let j = -r; j <= r; j++) sum += src[o + Math.min(Math.max(j, 0), w - 1)];
      for (let x = 0; x < w; x++) {
        dst[o + x] = sum * scale;
        const add = x + r + 1;
        const drop = x - r;
        sum += (add < w ? src[o + add] : last) - (drop > 0 ? src[o + drop] : first);
      }
    }
  }

  // The same down each column, a whole row at a time (memory in order, not a column's stride apart).
  function boxColumns(src, dst, w, h, r, sum) {
    const scale = 1 / (2 * r + 1);
    sum.fill(0);
    for (let j = -r; j <= r; j++) {
      const row = Math.min(Math.max(j, 0), h - 1) * w;
      for (let x = 0; x < w; x++) sum[x] += src[row + x];
    }
    for (let y = 0; y < h; y++) {
      const o = y * w;
      const add = Math.min(y + r + 1, h - 1) * w;
      const drop = Math.max(y - r, 0) * w;
      for (let x = 0; x < w; x++) {
        dst[o + x] = sum[x] * scale;
        sum[x] += src[add + x] - src[drop + x];
      }
    }
  }

  function feather(alpha, w, h, sigma) {
    const data = Float32Array.from(alpha);
    const spare = new Float32Array(alpha.length);
    const sum = new Float64Array(w);
    for (const r of boxRadii(sigma)) {
      if (r <= 0) continue;
      boxRows(data, spare, w, h, r);
      boxColumns(spare, data, w, h, r, sum);
    }
    const out = new Uint8Array(alpha.length);
    for (let i = 0; i < out.length; i++) out[i] = data[i] + 0.5;
    return out;
  }

  // ------------------------------------------------------------ the edge controls (edges.controls)
  function controls(base, w, h, c, scale) {
    let alpha = new Uint8Array(base.length);
    const threshold = c.alpha_threshold;
    const opaque = c.opaque_threshold || 256;
    for (let i = 0; i < base.length; i++) {
      const value = base[i] < threshold ? 0 : base[i];
      alpha[i] = value >= opaque ? 255 : value;
    }
    const radius = Math.round(c.erode * scale);
    if (radius >= 1) alpha = erode(alpha, w, h, radius);
    const sigma = CUT_GAUSSIAN * (c.feather / 2) * scale;
    if (sigma >= 0.3) alpha = feather(alpha, w, h, sigma);
    return alpha;
  }

  // The cut-out's pixels: the photo's colours with the matte (times the photo's own alpha), flattened
  // on a colour, or the matte alone as grey.
  function compose(out, rgba, alpha, look) {
    for (let i = 0, p = 0; i < alpha.length; i++, p += 4) {
      const a = rgba ? Math.round((alpha[i] * rgba[p + 3]) / 255) : alpha[i];
      if (look.alphaOnly || !rgba) {
        out[p] = out[p + 1] = out[p + 2] = a;
        out[p + 3] = 255;
      } else if (look.background) {
        const [r, g, b] = look.background;
        out[p] = (rgba[p] * a + r * (255 - a) + 127) / 255;
        out[p + 1] = (rgba[p + 1] * a + g * (255 - a) + 127) / 255;
        out[p + 2] = (rgba[p + 2] * a + b * (255 - a) + 127) / 255;
        out[p + 3] = 255;
      } else {
        out[p] = rgba[p];
        out[p + 1] = rgba[p + 1];
        out[p + 2] = rgba[p + 2];
        out[p + 3] = a;
      }
    }
  }

  function hexColour(text) {
    return [1, 3, 5].map((at) => parseInt(text.slice(at, at + 2), 16));
  }

  // ------------------------------------------------------------ the preview
  // The pixels of one size of the preview: the matte and the photo drawn at w x h, `scale` of the
  // full image, and the matte before the controls (with and without solidify), made when first asked.
  function level(matte, photo, full, scale, solid) {
    const w = Math.max(1, Math.floor(full.width * scale));
    const h = Math.max(1, Math.floor(full.height * scale));
    const grey = pixelsOf(matte, w, h);
    const raw = new Uint8Array(w * h);
    for (let i = 0; i < raw.length; i++) raw[i] = grey[4 * i];
    const rgba = photo ? pixelsOf(photo, w, h) : null;
    const bases = new Map();
    function alpha(c) {
      const solidOn = Boolean(c.solidify);
      if (!bases.has(solidOn)) bases.set(solidOn, solidOn ? solidify(raw, w, h, full, solid) : raw);
      return controls(bases.get(solidOn), w, h, c, scale);
    }
    function image(c, look) {
      const out = new ImageData(w, h);
      compose(out.data, rgba, alpha(c), look);
      return out;
    }
    return { w, h, alpha, image };
  }

  // The matte and the photo, loaded once; alpha() and draw() then take each new set of controls. The
  // photo may be missing (a format the browser cannot show): draw() then shows the matte alone.
  // `solid` holds solid.py's constants (the page has them from the server).
  async function loadPreview(matteUrl, inputUrl, solid) {
    const matte = await loadImage(matteUrl);
    let photo = null;
    try {
      photo = await loadImage(inputUrl);
    } catch (_) {
      photo = null; // TIFF, for one, is beyond most browsers
    }
    const full = { width: matte.naturalWidth, height: matte.naturalHeight };
    const scale = Math.min(1, Math.sqrt(PREVIEW_PIXELS / (full.width * full.height)));
    const sharp = level(matte, photo, full, scale, solid);
    let rough = null; // half the size each way, made on the first quick draw
    const scratch = document.createElement("canvas");

    // quick: while a slider is dragged, a quarter of the pixels scaled up (a wide erosion or feather
    // then keeps up with the hand); the full preview when it is let go.
    function draw(canvas, c, look, quick) {
      if (canvas.width !== sharp.w || canvas.height !== sharp.h) {
        canvas.width = sharp.w;
        canvas.height = sharp.h;
      }
      const ctx = canvas.getContext("2d");
      if (!quick || sharp.w * sharp.h < QUICK_FROM) {
        ctx.putImageData(sharp.image(c, look), 0, 0);
        return "sharp";
      }
      rough = rough || level(matte, photo, full, scale / 2, solid);
      scratch.width = rough.w;
      scratch.height = rough.h;
      scratch.getContext("2d").putImageData(rough.image(c, look), 0, 0);
      ctx.clearRect(0, 0, sharp.w, sharp.h);
      ctx.drawImage(scratch, 0, 0, sharp.w, sharp.h);
      return "quick";
    }

    return { width: sharp.w, height: sharp.h, scale, full, hasPhoto: photo !== null, alpha: sharp.alpha, draw };
  }

  // ------------------------------------------------------------ the panel
  function initAdjust(panel) {
    const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
    const form = panel.querySelector("#adjust-form");
    const canvas = panel.querySelector("#adjust-preview");
    const note = panel.querySelector("#adjust-note");
    const field = (name) => form.querySelector("#adj-" + name);
    const fill = field("fill");
    const colour = field("color");
    const format = field("format");
    const alphaOnly = field("alpha-only");
    const solid = {
      bandShare: Number(panel.dataset.bandShare),
      minBandPx: Number(panel.dataset.minBandPx),
      side: Number(panel.dataset.solidSide),
      half: Number(panel.dataset.solidHalf),
    };
    let preview = null; // once the matte and the photo are in
    let drawn = 0;
    let queued = false;
    let quick = false; // the next draw may be a quick one

    function showValues() {
      for (const name of NUMBERS) field(name + "-value").textContent = field(name).value;
      colour.disabled = !fill.checked || alphaOnly.checked;
      fill.disabled = alphaOnly.checked;
      format.disabled = alphaOnly.checked;
    }

    function draw() {
      queued = false;
      if (!preview) return;
      const c = { solidify: field("solidify").checked };
      for (const name of NUMBERS) c[name] = Number(field(name).value);
      // JPEG has no alpha channel: the server flattens it on white unless another colour is chosen.
      const flat = fill.checked ? hexColour(colour.value) : format.value === "jpg" ? [255, 255, 255] : null;
      canvas.dataset.quality = preview.draw(canvas, c, { alphaOnly: alphaOnly.checked, background: flat }, quick);
      canvas.dataset.drawn = String(++drawn); // a count the page's tests wait on
    }

    // A dragged slider sends `input` on each move and `change` when it is let go (a key sends both):
    // the moves are drawn quick, the rest sharp.
    function schedule(event) {
      const dragging = event?.type === "input" && event.target.type === "range";
      quick = queued ? quick && dragging : dragging;
      showValues();
      if (!queued) {
        queued = true;
        window.requestAnimationFrame(draw);
      }
    }

    async function save() {
      const message = panel.querySelector("#adjust-message");
      const links = panel.querySelector("#adjust-links");
      const button = panel.querySelector("#adjust-save");
      const data = new FormData();
      for (const name of NUMBERS) data.append(name, field(name).value);
      for (const name of SWITCHES) data.append(name, field(name).checked ? "true" : "false");
      if (alphaOnly.checked) data.append("alpha_only", "true");
      else {
        data.append("format", format.value);
        if (fill.checked) data.append("bg_color", colour.value);
      }
      button.disabled = true;
      message.textContent = "";
      links.replaceChildren();
      try {
        const response = await fetch(panel.dataset.renderUrl, {
          method: "POST",
          body: data,
          credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        });
        let body = null;
        try {
          body = await response.json();
        } catch (_) {
          body = null; // a proxy's HTML error page, for instance
        }
        if (response.status !== 201 || !body) {
          message.textContent = body?.error?.message || "The server answered " + response.status + ": please try again.";
          return;
        }
        links.replaceChildren(
          buttonLink(body.result_url + "?download=1", "Download it", "adjust-download", true),
          buttonLink(body.view_url, "Open the new cut-out", "adjust-open", false)
        );
      } catch (err) {
        message.textContent = "Could not reach the server: " + err.message;
      } finally {
        button.disabled = false;
      }
    }

    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
    panel.querySelector("#adjust-reset").addEventListener("click", () => {
      form.reset(); // each control back to what the page came with: the task's own options
      schedule();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save();
    });
    showValues();

    loadPreview(panel.dataset.matteUrl, panel.dataset.inputUrl, solid).then(
      (loaded) => {
        preview = loaded;
        note.textContent = loaded.hasPhoto ? "" : "This browser cannot show the original's format: the preview shows the matte alone.";
        if (loaded.scale < 1) panel.querySelector("#adjust-size").textContent = "(at " + loaded.width + " × " + loaded.height + ")";
        draw();
      },
      () => {
        note.textContent = "The matte could not be loaded: no preview (saving still works).";
      }
    );
  }

  function buttonLink(href, text, id, primary) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    a.id = id;
    a.className = primary ? "btn primary" : "btn";
    return a;
  }

  // The preview alone, for the page's tests and `make bench-preview`, which drive it without a panel.
  window.cvunetPreview = { load: loadPreview };

  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.getElementById("adjust");
    if (panel) initAdjust(panel);
  });
})();
